/*
 * Counters shared by the daemon's processes (Workers: N, src/server/slots.ts): one page of
 * memory that the main process makes and every worker process maps, so that MaxConnections
 * and the connection ids are counted across processes with atomic instructions.
 *
 *   cellsCreate() -> {fd, cells}        a new zeroed page behind a memfd; the fd is
 *                                        close-on-exec (a worker process gets it explicitly,
 *                                        as one of its stdio descriptors)
 *   cellsAttach(fd) -> cells             the page behind such a descriptor
 *   cellsLoad(cells, i) -> int32
 *   cellsStore(cells, i, value)
 *   cellsAdd(cells, i, delta) -> the value before
 *   cellsCas(cells, i, expected, desired) -> the value before (swapped when it was expected)
 *
 * `cells` is an ArrayBuffer over the page, unmapped when it is collected. Every access goes
 * through these functions: sequentially consistent, whichever process makes it.
 */
#define _GNU_SOURCE
#include "addon.h"
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define CELLS (PAGE / (int)sizeof(int32_t))

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  munmap(data, PAGE);
}

/* The page behind fd as an ArrayBuffer; NULL (an exception pending) on failure. */
static napi_value map_cells(napi_env env, int fd) {
  void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    throw_errno(env, "mmap", errno);
    return NULL;
  }
  napi_value buf;
  if (napi_create_external_arraybuffer(env, p, PAGE, unmap, NULL, &buf) != napi_ok) {
    munmap(p, PAGE);
    napi_throw_error(env, NULL, "cells: cannot make an external ArrayBuffer");
    return NULL;
  }
  return buf;
}

static napi_value CellsCreate(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = memfd_create("smtpsift-slots", MFD_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, "memfd_create", errno);
    return NULL;
  }
  if (ftruncate(fd, PAGE) != 0) {
    int err = errno;
    close(fd);
    throw_errno(env, "ftruncate", err);
    return NULL;
  }
  napi_value cells = map_cells(env, fd);
  if (cells == NULL) {
    close(fd);
    return NULL;
  }
  napi_value out, fdv;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &fdv);
  napi_set_named_property(env, out, "fd", fdv);
  napi_set_named_property(env, out, "cells", cells);
  return out;
}

/* argv[0] is the cells buffer and argv[1] a cell index: the cell, or NULL (thrown). */
static int32_t *cell_arg(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t len;
  int32_t i;
  if (argc < want || napi_get_arraybuffer_info(env, argv[0], &data, &len) != napi_ok || len != PAGE ||
      napi_get_value_int32(env, argv[1], &i) != napi_ok || i < 0 || i >= CELLS) {
    napi_throw_type_error(env, NULL, "cells: (cells, index, ...) with a buffer from cellsCreate or cellsAttach");
    return NULL;
  }
  for (size_t k = 2; k < want; k++) {
    int32_t v;
    if (napi_get_value_int32(env, argv[k], &v) != napi_ok) {
      napi_throw_type_error(env, NULL, "cells: values are 32-bit integers");
      return NULL;
    }
  }
  return (int32_t *)data + i;
}

static napi_value int_value(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

static int32_t int_arg(napi_env env, napi_value v) {
  int32_t out = 0;
  napi_get_value_int32(env, v, &out);
  return out;
}

static napi_value CellsAttach(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "cellsAttach(fd)");
    return NULL;
  }
  return map_cells(env, fd);
}

static napi_value CellsLoad(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t *c = cell_arg(env, info, 2, argv);
  return c == NULL ? NULL : int_value(env, __atomic_load_n(c, __ATOMIC_SEQ_CST));
}

static napi_value CellsStore(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t *c = cell_arg(env, info, 3, argv);
  if (c != NULL) __atomic_store_n(c, int_arg(env, argv[2]), __ATOMIC_SEQ_CST);
  return NULL;
}

static napi_value CellsAdd(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t *c = cell_arg(env, info, 3, argv);
  /* Through uint32_t: a counter that passes 2^31 wraps instead of overflowing. */
  return c == NULL ? NULL : int_value(env, (int32_t)__atomic_fetch_add((uint32_t *)c, (uint32_t)int_arg(env, argv[2]), __ATOMIC_SEQ_CST));
}

static napi_value CellsCas(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t *c = cell_arg(env, info, 4, argv);
  if (c == NULL) return NULL;
  int32_t expected = int_arg(env, argv[2]);
  __atomic_compare_exchange_n(c, &expected, int_arg(env, argv[3]), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return int_value(env, expected);
}

void register_cells(napi_env env, napi_value exports) {
  export_fn(env, exports, "cellsCreate", CellsCreate);
  export_fn(env, exports, "cellsAttach", CellsAttach);
  export_fn(env, exports, "cellsLoad", CellsLoad);
  export_fn(env, exports, "cellsStore", CellsStore);
  export_fn(env, exports, "cellsAdd", CellsAdd);
  export_fn(env, exports, "cellsCas", CellsCas);
}
