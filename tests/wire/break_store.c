/*
 * break_store DBDIR CH SEQ: deletes the event record of seq SEQ in channel
 * CH from the RocksDB in DBDIR, nothing else: a store with a gap in one
 * channel's event log, for the test of `parleyd verify` (test_backup.py).
 * The key layout is storage/store.c's: hist family h<NN> of
 * store_range_of(ch), key ch \0 'e' seq8 (big-endian).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "storage/store.h"

int main(int argc, char **argv)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_column_family_handle_t *h[128];
	const rocksdb_options_t *opts[128];
	char **names, *err = NULL, key[128];
	size_t n, kl, chl;
	unsigned long long seq;
	unsigned nh = 0;
	rocksdb_t *db;
	rocksdb_writeoptions_t *wo;

	if (argc != 4) {
		fprintf(stderr, "usage: break_store DBDIR CH SEQ\n");
		return 2;
	}
	seq = strtoull(argv[3], NULL, 10);
	names = rocksdb_list_column_families(o, argv[1], &n, &err);
	if (err || n > 128) {
		fprintf(stderr, "break_store: %s\n", err ? err : "families");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		opts[i] = o;
		if (names[i][0] == 'h')
			nh++;
	}
	db = rocksdb_open_column_families(o, argv[1], (int)n,
					  (const char *const *)names, opts, h,
					  &err);
	if (err) {
		fprintf(stderr, "break_store: %s\n", err);
		return 1;
	}
	chl = strlen(argv[2]);
	memcpy(key, argv[2], chl);
	key[chl] = 0;
	key[chl + 1] = 'e';
	for (int i = 0; i < 8; i++)
		key[chl + 2 + i] = (char)(seq >> (56 - 8 * i));
	kl = chl + 10;
	wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(wo, 1);
	for (size_t i = 0; i < n; i++) {
		char want[4];

		snprintf(want, sizeof(want), "h%02u",
			 store_range_of(argv[2], nh));
		if (!strcmp(names[i], want))
			rocksdb_delete_cf(db, wo, h[i], key, kl, &err);
	}
	if (err) {
		fprintf(stderr, "break_store: %s\n", err);
		return 1;
	}
	rocksdb_writeoptions_destroy(wo);
	for (size_t i = 0; i < n; i++)
		rocksdb_column_family_handle_destroy(h[i]);
	rocksdb_close(db);
	rocksdb_list_column_families_destroy(names, n);
	rocksdb_options_destroy(o);
	return 0;
}
