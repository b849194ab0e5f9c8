/*
 * control: DATA/control.sock, a unix stream socket on which the running
 * server takes requests from `parleyd backup` (actors/backup.c) on the same
 * machine. One request line per connection, one answer line:
 *
 *   checkpoint /abs/dir\n   ->  ok\n  |  error why\n
 *
 * (a RocksDB checkpoint of DATA/db into /abs/dir, which must not exist).
 * Only the server's own user and root may connect (SO_PEERCRED; the socket
 * is 0600 in DATA, which is 0700). Served by one thread, one request at a
 * time.
 */
#ifndef PARLEY_CONTROL_H
#define PARLEY_CONTROL_H

#include <stddef.h>

#include "storage/store.h"

/* Starts the thread, listening on DATA/control.sock (a stale one from a
 * crash is replaced: the caller holds DATA/db's lock). 0 or -1 (logged). */
int control_start(const char *data_dir, store *st);
/* Stops it (after the request in progress) and removes the socket. */
void control_stop(void);

/* Client side: a connected socket to DATA/control.sock, or -1 with errno
 * (ENOENT / ECONNREFUSED: no server there). */
int control_connect(const char *data_dir);

#endif
