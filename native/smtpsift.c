/*
 * The few system calls smtpsift needs that Node.js does not offer. Kept in C against the
 * plain N-API (node_api.h), built from source by node-gyp at `npm ci`.
 *
 * cloexecFrom(fd): marks every descriptor >= fd close-on-exec, so that a filter (exec'd by
 * /bin/sh) inherits only its stdin, stdout and stderr, as proxsmtpd's filters did. The
 * daemon keeps using its descriptors; only exec'd children lose them.
 *
 * TransparentProxy (issue 4; spec/netns-transparent.md), Linux only:
 *   originalDst(fd)              where a REDIRECTed connection was going (SO_ORIGINAL_DST)
 *   transparentListen(host, port, backlog) -> fd
 *                                a listening socket with IP_TRANSPARENT, for TPROXY rules;
 *                                Node serves it with server.listen({fd})
 *   transparentConnect(source, host, port, timeoutMs, cb(err, fd))
 *                                a socket bound to the client's address with IP_TRANSPARENT,
 *                                connected without blocking: libuv tells us when the connect
 *                                is done, and only then is the fd handed to Node
 *                                (new net.Socket({fd})).
 *   keepCaps(on)                 prctl(PR_SET_KEEPCAPS): permitted capabilities survive setuid
 *   limitCaps([cap, ...])        capset: exactly these capabilities, effective and permitted
 *   getNofile() -> {soft, hard}  getrlimit(RLIMIT_NOFILE); unlimited is Infinity
 *   setNofile(soft, hard)        setrlimit(RLIMIT_NOFILE): more connections than the
 *                                inherited limit allows (raising hard needs CAP_SYS_RESOURCE)
 *   resolveHost(name) -> [ip, ...]
 *                                getaddrinfo(3), synchronously, in the order it returns:
 *                                a host name in Listen is resolved while the configuration
 *                                is parsed, as proxsmtpd did, and Node's dns is asynchronous
 * Shared counters for Workers: N are in native/cells.c, dot-stuffing in native/dot.c and
 * the filter's spawn in native/spawn.c.
 * Every socket made here is close-on-exec: a filter never inherits one.
 */
#define _GNU_SOURCE
#include "addon.h"
#include <uv.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
/* <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>; both are 80. Those
 * headers clash with <netinet/in.h>, so the values are spelled out here. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

/* ---- errors: a JS Error with .code = "EPERM" etc. and "what: strerror" as message ---- */

static napi_value errno_error(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
#ifdef __GLIBC__
  const char *name = strerrorname_np(err);
#else
  const char *name = NULL;
#endif
  napi_value code = NULL, text, error;
  if (name != NULL) napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  return error;
}

void throw_errno(napi_env env, const char *what, int err) {
  napi_throw(env, errno_error(env, what, err));
}

static int arg_int(napi_env env, napi_value v, int32_t *out, const char *what) {
  if (napi_get_value_int32(env, v, out) == napi_ok) return 0;
  napi_throw_type_error(env, NULL, what);
  return -1;
}

static int arg_string(napi_env env, napi_value v, char *buf, size_t size, const char *what) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) == napi_ok && len < size - 1) return 0;
  napi_throw_type_error(env, NULL, what);
  return -1;
}

/* ---- cloexecFrom ---- */

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

/* ---- addresses ---- */

/* "10.0.0.1" or "2001:db8::1" (no brackets) and a port into a sockaddr; 0 if not an IP. */
static socklen_t to_sockaddr(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    return sizeof *in4;
  }
  if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    return sizeof *in6;
  }
  return 0;
}

/* {address, port, family: 'IPv4'|'IPv6'}, as Node's socket.address() spells them. */
static napi_value from_sockaddr(napi_env env, const struct sockaddr_storage *ss) {
  char text[INET6_ADDRSTRLEN] = "";
  int port = 0;
  const char *family = "IPv4";
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in4->sin_addr, text, sizeof text);
    port = ntohs(in4->sin_port);
  } else {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    port = ntohs(in6->sin6_port);
    family = "IPv6";
  }
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "address", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, obj, "port", v);
  napi_create_string_utf8(env, family, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "family", v);
  return obj;
}

/* IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT: needs CAP_NET_ADMIN (or CAP_NET_RAW). */
static int set_transparent(int fd, int family) {
  int one = 1;
  if (family == AF_INET6) return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
  return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
}

/*
 * A non-blocking, close-on-exec TCP socket with SO_REUSEADDR and IP_TRANSPARENT, bound to
 * `addr` (the listener's address, or the client's for an upstream connection, as proxsmtpd
 * did). On failure: -1, errno set, and *step names the call that failed.
 */
static int transparent_socket(const struct sockaddr_storage *addr, socklen_t len, const char **step) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *step = "socket";
    return -1;
  }
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) *step = "SO_REUSEADDR";
  else if (set_transparent(fd, addr->ss_family) != 0) *step = "IP_TRANSPARENT";
  else if (bind(fd, (const struct sockaddr *)addr, len) != 0) *step = "bind";
  else return fd;
  int err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* ---- originalDst(fd) ---- */

/*
 * The destination a connection had before netfilter's REDIRECT/DNAT rewrote it: the
 * conntrack entry's original tuple. A socket on a dual-stack [::] listener whose local
 * address is v4-mapped (::ffff:a.b.c.d) carries IPv4 traffic, so it asks the IPv4 table.
 */
static napi_value OriginalDst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || arg_int(env, argv[0], &fd, "originalDst: the descriptor must be a number") != 0) return NULL;
  struct sockaddr_storage local, dst;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) {
    throw_errno(env, "getsockname", errno);
    return NULL;
  }
  int v4 = local.ss_family == AF_INET ||
           (local.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr));
  memset(&dst, 0, sizeof dst);
  len = sizeof dst;
  int rc = v4 ? getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len)
              : getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len);
  if (rc != 0) {
    throw_errno(env, v4 ? "getsockopt SO_ORIGINAL_DST" : "getsockopt IP6T_SO_ORIGINAL_DST", errno);
    return NULL;
  }
  return from_sockaddr(env, &dst);
}

/* ---- transparentListen(host, port, backlog) ---- */

/* The TPROXY target only hands connections to a listener with IP_TRANSPARENT, set before bind. */
static napi_value TransparentListen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char host[INET6_ADDRSTRLEN];
  int32_t port, backlog;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || arg_string(env, argv[0], host, sizeof host, "transparentListen: host must be an IP address") != 0 ||
      arg_int(env, argv[1], &port, "transparentListen: port must be a number") != 0 ||
      arg_int(env, argv[2], &backlog, "transparentListen: backlog must be a number") != 0)
    return NULL;
  struct sockaddr_storage ss;
  socklen_t len = to_sockaddr(host, port, &ss);
  if (len == 0) {
    napi_throw_type_error(env, NULL, "transparentListen: host must be an IP address");
    return NULL;
  }
  const char *step = NULL;
  int fd = transparent_socket(&ss, len, &step);
  if (fd >= 0 && listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    fd = -1;
    step = "listen";
  }
  if (fd < 0) {
    throw_errno(env, step, errno);
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* ---- transparentConnect(source, host, port, timeoutMs, cb) ---- */

/*
 * The connect runs in the kernel; libuv's poll handle says when the socket is writable
 * (connected, or failed: SO_ERROR tells which), and a timer bounds the wait. Both handles
 * are closed before the callback runs, so libuv no longer watches the fd when Node adopts
 * it (a poll handle still open would remove Node's own epoll registration when closed).
 */
typedef struct {
  napi_env env;
  napi_ref cb;
  napi_async_context ctx;
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  int err;
  int done;
  int open_handles;
} connect_req;

static void connect_closed(uv_handle_t *h) {
  connect_req *r = (connect_req *)h->data;
  if (--r->open_handles > 0) return;
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, r->cb, &cb);
  napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
  if (r->err != 0) {
    argv[0] = errno_error(env, "connect", r->err);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_int32(env, r->fd, &argv[1]);
  }
  /* napi_make_callback, not napi_call_function: it runs the microtasks (promise reactions) afterwards. */
  if (napi_make_callback(env, r->ctx, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
  napi_delete_reference(env, r->cb);
  napi_async_destroy(env, r->ctx);
  napi_close_handle_scope(env, scope);
  free(r);
}

static void connect_finish(connect_req *r, int err) {
  if (r->done) return;
  r->done = 1;
  r->err = err;
  uv_poll_stop(&r->poll);
  uv_timer_stop(&r->timer);
  if (err != 0) {
    close(r->fd);
    r->fd = -1;
  }
  uv_close((uv_handle_t *)&r->poll, connect_closed);
  uv_close((uv_handle_t *)&r->timer, connect_closed);
}

static void connect_writable(uv_poll_t *h, int status, int events) {
  (void)events;
  connect_req *r = (connect_req *)h->data;
  int err = 0;
  socklen_t len = sizeof err;
  /* libuv reports POLLERR as UV_EBADF; the socket's own error says what really happened. */
  if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && status < 0) err = -status;
  connect_finish(r, err);
}

static void connect_timeout(uv_timer_t *t) {
  connect_finish((connect_req *)t->data, ETIMEDOUT);
}

static napi_value TransparentConnect(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char source[INET6_ADDRSTRLEN], host[INET6_ADDRSTRLEN];
  int32_t port, timeout;
  napi_valuetype cbtype;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5 || arg_string(env, argv[0], source, sizeof source, "transparentConnect: source must be an IP address") != 0 ||
      arg_string(env, argv[1], host, sizeof host, "transparentConnect: host must be an IP address") != 0 ||
      arg_int(env, argv[2], &port, "transparentConnect: port must be a number") != 0 ||
      arg_int(env, argv[3], &timeout, "transparentConnect: timeout must be a number") != 0)
    return NULL;
  if (napi_typeof(env, argv[4], &cbtype) != napi_ok || cbtype != napi_function) {
    napi_throw_type_error(env, NULL, "transparentConnect: the callback must be a function");
    return NULL;
  }
  struct sockaddr_storage src, dst;
  socklen_t srclen = to_sockaddr(source, 0, &src), dstlen = to_sockaddr(host, port, &dst);
  if (srclen == 0 || dstlen == 0 || src.ss_family != dst.ss_family) {
    napi_throw_type_error(env, NULL, "transparentConnect: source and host must be IP addresses of one family");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "transparentConnect: no event loop");
    return NULL;
  }
  /* As proxsmtpd: bound to client_ip:0 with IP_TRANSPARENT, then connect(original_dst). */
  const char *step = NULL;
  int fd = transparent_socket(&src, srclen, &step);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&dst, dstlen) != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    errno = err;
    fd = -1;
    step = "connect";
  }
  if (fd < 0) {
    throw_errno(env, step, errno);
    return NULL;
  }
  connect_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    close(fd);
    throw_errno(env, "transparentConnect", ENOMEM);
    return NULL;
  }
  r->env = env;
  r->fd = fd;
  r->poll.data = r;
  r->timer.data = r;
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "smtpsift:transparentConnect", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &r->ctx);
  napi_create_reference(env, argv[4], 1, &r->cb);
  int rc = uv_poll_init_socket(loop, &r->poll, fd);
  if (rc != 0) {
    napi_delete_reference(env, r->cb);
    napi_async_destroy(env, r->ctx);
    free(r);
    close(fd);
    throw_errno(env, "uv_poll_init_socket", -rc);
    return NULL;
  }
  uv_timer_init(loop, &r->timer);
  r->open_handles = 2;
  uv_poll_start(&r->poll, UV_WRITABLE, connect_writable);
  uv_timer_start(&r->timer, connect_timeout, (uint64_t)(timeout > 0 ? timeout : 1), 0);
  return NULL;
}

/* ---- capabilities across the privilege drop ---- */

static napi_value KeepCaps(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1) napi_get_value_bool(env, argv[0], &on);
  if (prctl(PR_SET_KEEPCAPS, on ? 1L : 0L, 0L, 0L, 0L) != 0) throw_errno(env, "prctl PR_SET_KEEPCAPS", errno);
  return NULL;
}

/*
 * Sets the calling (main) thread's effective and permitted sets to exactly the listed
 * capabilities, inheritable and ambient to none: a filter exec'd by a non-root user gets
 * nothing. The raw syscall keeps libcap out of the build.
 */
static napi_value LimitCaps(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t count = 0;
  bool is_array = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "limitCaps: an array of capability numbers");
    return NULL;
  }
  napi_get_array_length(env, argv[0], &count);
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  memset(data, 0, sizeof data);
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    int32_t cap;
    napi_get_element(env, argv[0], i, &v);
    if (arg_int(env, v, &cap, "limitCaps: an array of capability numbers") != 0) return NULL;
    if (cap < 0 || cap >= 32 * _LINUX_CAPABILITY_U32S_3) {
      napi_throw_range_error(env, NULL, "limitCaps: no such capability");
      return NULL;
    }
    data[cap / 32].effective |= 1U << (cap % 32);
    data[cap / 32].permitted |= 1U << (cap % 32);
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L); /* ENOSYS before Linux 4.3 is fine */
  if (syscall(SYS_capset, &hdr, data) != 0) throw_errno(env, "capset", errno);
  return NULL;
}

/* ---- RLIMIT_NOFILE ---- */

static napi_value limit_value(napi_env env, rlim_t v) {
  napi_value out;
  napi_create_double(env, v == RLIM_INFINITY ? (double)INFINITY : (double)v, &out);
  return out;
}

static napi_value GetNofile(napi_env env, napi_callback_info info) {
  (void)info;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    throw_errno(env, "getrlimit RLIMIT_NOFILE", errno);
    return NULL;
  }
  napi_value obj;
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "soft", limit_value(env, rl.rlim_cur));
  napi_set_named_property(env, obj, "hard", limit_value(env, rl.rlim_max));
  return obj;
}

/* A whole number >= 0, or Infinity for RLIM_INFINITY. */
static int arg_limit(napi_env env, napi_value v, rlim_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) == napi_ok && d >= 0 && d == (double)(rlim_t)d) {
    *out = (rlim_t)d;
    return 0;
  }
  if (napi_get_value_double(env, v, &d) == napi_ok && isinf(d) && d > 0) {
    *out = RLIM_INFINITY;
    return 0;
  }
  napi_throw_type_error(env, NULL, "setNofile: limits must be whole numbers >= 0 or Infinity");
  return -1;
}

static napi_value SetNofile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct rlimit rl;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "setNofile: soft and hard limits");
    return NULL;
  }
  if (arg_limit(env, argv[0], &rl.rlim_cur) != 0 || arg_limit(env, argv[1], &rl.rlim_max) != 0) return NULL;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) throw_errno(env, "setrlimit RLIMIT_NOFILE", errno);
  return NULL;
}

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}


/*
 * Memory a busy daemon gives back: without this, glibc raises its mmap threshold after the
 * first large free and keeps message-sized buffers (the spool's and the encoder's 256-512 KiB
 * pieces) in its heaps, one heap per thread that ever allocated. Measured after 6,000 small and
 * 200 1 MB messages: RSS 84-117 MB (mean ~96) without, 83-84 MB with. Done once, at load.
 */
static void tune_malloc(void) {
  static int done = 0;
  if (done) return;
  done = 1;
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}

/*
 * trimMemory(): malloc_trim(0), which gives the free pages inside glibc's heaps back to the
 * system, not only those at the top (M_TRIM_THRESHOLD). src/net/garbage.ts calls it after
 * the collections it asks for during large messages.
 */
static napi_value TrimMemory(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  malloc_trim(0);
  return NULL;
}

/* ---- resolveHost ---- */

/*
 * The addresses of a host name, as getaddrinfo returns them (any family, its order,
 * duplicates of one address dropped). proxsmtpd's sock_any_pton called getaddrinfo with
 * no hints and took the first result; AI_ADDRCONFIG is what glibc assumes without hints.
 * A failure throws an Error whose code is the EAI_ name and whose message is gai_strerror.
 */
static napi_value ResolveHost(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char name[256];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || arg_string(env, argv[0], name, sizeof name, "resolveHost: name must be a string of at most 255 bytes") != 0)
    return NULL;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  int rc = getaddrinfo(name, NULL, &hints, &res);
  if (rc != 0) {
    const char *code = rc == EAI_NONAME ? "EAI_NONAME" : rc == EAI_AGAIN ? "EAI_AGAIN" : rc == EAI_FAIL ? "EAI_FAIL" : "EAI_OTHER";
    napi_value c, text, error;
    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
    napi_create_string_utf8(env, rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc), NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, c, text, &error);
    napi_throw(env, error);
    return NULL;
  }
  napi_value out;
  napi_create_array(env, &out);
  uint32_t n = 0;
  char prev[INET6_ADDRSTRLEN] = "";
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = "";
    if (ai->ai_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, text, sizeof text);
    else if (ai->ai_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, text, sizeof text);
    if (text[0] == '\0' || strcmp(text, prev) == 0) continue;
    memcpy(prev, text, sizeof prev);
    napi_value v;
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, out, n++, v);
  }
  freeaddrinfo(res);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  tune_malloc();
  register_dot(env, exports);
  register_cells(env, exports);
  register_spawn(env, exports);
  register_pump(env, exports);
  export_fn(env, exports, "cloexecFrom", CloexecFrom);
  export_fn(env, exports, "originalDst", OriginalDst);
  export_fn(env, exports, "transparentListen", TransparentListen);
  export_fn(env, exports, "transparentConnect", TransparentConnect);
  export_fn(env, exports, "keepCaps", KeepCaps);
  export_fn(env, exports, "limitCaps", LimitCaps);
  export_fn(env, exports, "getNofile", GetNofile);
  export_fn(env, exports, "setNofile", SetNofile);
  export_fn(env, exports, "trimMemory", TrimMemory);
  export_fn(env, exports, "resolveHost", ResolveHost);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
