/* placeholder until search lands */
#include "actors/actors.h"
void search_op(struct shard_state *ss, rt_conn *c, const char *ws,
	       const char *user, bool has_rid, uint64_t rid,
	       const msgpack_object *map)
{
	(void)ss; (void)ws; (void)user; (void)map;
	reply_err(c, has_rid, rid, "search", "UNAVAILABLE", "search is not built yet", 0);
}
