/* What the addon's source files share (defined in native/smtpsift.c). */
#ifndef SMTPSIFT_ADDON_H
#define SMTPSIFT_ADDON_H
#include <node_api.h>

/* Throws a JS Error with .code = "EPERM" etc. and "what: strerror" as its message. */
void throw_errno(napi_env env, const char *what, int err);
/* exports[name] = a function calling cb. */
void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

void register_dot(napi_env env, napi_value exports);   /* native/dot.c */
void register_cells(napi_env env, napi_value exports); /* native/cells.c */
void register_spawn(napi_env env, napi_value exports); /* native/spawn.c */

#endif
