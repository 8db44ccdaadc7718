/* sr_exchange: the per-(from, to) worker buffers a batch's keyed elements
 * are swapped through, in bulk (SPEC section 15). Lua module
 * streamrun.cexchange. */
#ifndef SR_EXCHANGE_H
#define SR_EXCHANGE_H
#include <lua.h>

/* Opens streamrun.cexchange: new(n), clear, scatter, put, take,
 * take_folded, shard,
 * gather, adopt_state, partition, key_orders (see sr_exchange.c). Returns
 * 1 (the module table). */
int luaopen_streamrun_cexchange(lua_State *L);

/* Frees the calling thread's scratch buffer (a pool thread's, as it
 * exits). */
void sr_exchange_thread_free(void);

#endif
