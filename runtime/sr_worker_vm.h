/* sr_worker_vm: a LuaJIT VM on each worker thread but the loop thread's
 * (SPEC section 15), each running streamrun.worker over the same job. Lua
 * module streamrun.cworkervm. */
#ifndef SR_WORKER_VM_H
#define SR_WORKER_VM_H
#include <lua.h>

/* Opens streamrun.cworkervm: new(n, init), run, wait, call,
 * close (see sr_worker_vm.c). Returns 1 (the module table). */
int luaopen_streamrun_cworkervm(lua_State *L);

#endif
