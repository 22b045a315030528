/*
 * The few system calls smtpsift needs that Node.js does not offer. Kept in C against the
 * plain N-API (node_api.h), built from source by node-gyp at `npm ci`.
 *
 * cloexecFrom(fd): marks every descriptor >= fd close-on-exec, so that a filter (exec'd by
 * /bin/sh) inherits only its stdin, stdout and stderr, as proxsmtpd's filters did. The
 * daemon keeps using its descriptors; only exec'd children lose them.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int cloexec_one(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return errno == EBADF ? 0 : -1;
  return (flags & FD_CLOEXEC) ? 0 : fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

/* Linux 5.11+ does it in one call; older kernels: walk /proc/self/fd. */
static int cloexec_from(int low) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)low, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
#endif
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL) return -1;
  int self = dirfd(dir), rc = 0;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int fd = atoi(e->d_name);
    if (fd >= low && fd != self && cloexec_one(fd) != 0) rc = -1;
  }
  closedir(dir);
  return rc;
}

static napi_value CloexecFrom(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t low = 3;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1 && napi_get_value_int32(env, argv[0], &low) != napi_ok) {
    napi_throw_type_error(env, NULL, "cloexecFrom: the descriptor must be a number");
    return NULL;
  }
  if (cloexec_from(low) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "cloexecFrom", NAPI_AUTO_LENGTH, CloexecFrom, NULL, &fn);
  napi_set_named_property(env, exports, "cloexecFrom", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
