/* What the addon's source files share (defined in native/smtpsift.c). */
#ifndef SMTPSIFT_ADDON_H
#define SMTPSIFT_ADDON_H
#include <node_api.h>

/* Throws a JS Error with .code = "EPERM" etc. and "what: strerror" as its message. */
void throw_errno(napi_env env, const char *what, int err);
/* exports[name] = a function calling cb. */
void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

/* native/dot.c, shared with native/pump.c. */
#include <stddef.h>
#include <stdint.h>
#define DOT_LINE_START 1
#define DOT_PENDING_CR 2
/* The first CR LF '.' at or after i, or -1. */
ptrdiff_t dot_crlf_dot(const unsigned char *p, size_t i, size_t len);
/* Stuffs `len` bytes into out (room for 2 * len + 2); flags carried between calls. */
size_t dot_encode(const unsigned char *in, size_t len, unsigned char *out, int32_t *flags, int32_t *stuffed);

void register_dot(napi_env env, napi_value exports);   /* native/dot.c */
void register_cells(napi_env env, napi_value exports); /* native/cells.c */
void register_spawn(napi_env env, napi_value exports); /* native/spawn.c */
void register_pump(napi_env env, napi_value exports);  /* native/pump.c */

#endif
