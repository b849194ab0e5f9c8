/* presence: placeholder */
#include "actors/actors.h"
void presence_on_watch(struct shard_state *ss, struct m_watch *m) { (void)ss; (void)m; }
void presence_tick(struct shard_state *ss, uint64_t now) { (void)ss; (void)now; }
