/* placeholder until REST lands */
#include "actors/actors.h"
