/*
 * spawnFilter(command, env, stdinFd, stdoutFd, onExit) -> { pid, stderr }
 *
 * command and every env entry ("NAME=value") are Buffers, passed to exec as they are:
 * proxsmtpd handed the FilterCommand's bytes to /bin/sh unchanged, whatever the
 * configuration file's encoding, and a string would have to be valid UTF-8 to cross
 * N-API. A NUL byte ends the string there, as it did in proxsmtpd's C strings.
 *
 * Runs `/bin/sh -c command` with posix_spawn, in a process group of its own (pgid = pid),
 * every signal at its default and none blocked, stdin and stdout on the given descriptors
 * (-1: /dev/null), stderr on a new pipe whose read end is returned. libuv's spawn forks the
 * whole daemon: copying its page tables, and the copy-on-write faults after, cost about
 * 3 ms of system time per filter on this machine, while posix_spawn shares the memory until
 * the exec (CLONE_VM | CLONE_VFORK).
 *
 * The child is reaped here, not by libuv (which waits only for its own children): a pidfd
 * (Linux 5.3) watched by a uv_poll on the calling thread's loop becomes readable when the
 * child exits; then waitpid collects it and onExit(code, signal) is called, code null when
 * a signal (its number) ended it.
 */
#define _GNU_SOURCE
#include "addon.h"
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

typedef struct {
  uv_poll_t poll;
  int pidfd;
  pid_t pid;
  int status;
  napi_threadsafe_function tsfn;
} child_t;

/* On the JS thread, in a callback scope: onExit(code | null, signal | null). */
static void call_exit(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  child_t *c = data;
  if (env != NULL && js_cb != NULL) {
    napi_value args[2], undefined;
    napi_get_null(env, &args[0]);
    napi_get_null(env, &args[1]);
    if (WIFEXITED(c->status)) napi_create_int32(env, WEXITSTATUS(c->status), &args[0]);
    else if (WIFSIGNALED(c->status)) napi_create_int32(env, WTERMSIG(c->status), &args[1]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, js_cb, 2, args, NULL);
  }
  free(c);
}

static void free_child(uv_handle_t *h) { free(h); }

static void on_closed(uv_handle_t *h) {
  child_t *c = (child_t *)h;
  close(c->pidfd);
  napi_call_threadsafe_function(c->tsfn, c, napi_tsfn_nonblocking);
  napi_release_threadsafe_function(c->tsfn, napi_tsfn_release);
}

static void on_exit_ready(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  child_t *c = (child_t *)p;
  pid_t r;
  do r = waitpid(c->pid, &c->status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* not yet: the pidfd said so early; wait for the next event */
  if (r < 0) c->status = -1; /* not ours to reap (ECHILD): neither an exit nor a signal, so a crash, never an accept */
  uv_poll_stop(p);
  uv_close((uv_handle_t *)p, on_closed);
}

#define USAGE "spawnFilter(command: Buffer, env: Buffer[], stdinFd: number, stdoutFd: number, onExit: function)"

/* A NUL-terminated copy of a Buffer's bytes (malloc'd), or NULL if `v` is not a Buffer. */
static char *buffer_string(napi_env env, napi_value v) {
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, v, &data, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s == NULL) return NULL;
  if (len > 0) memcpy(s, data, len);
  s[len] = '\0';
  return s;
}

static napi_value SpawnFilter(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false, is_buffer = false;
  int32_t in_fd, out_fd;
  napi_valuetype cb_type;
  if (argc < 5 || napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_value_int32(env, argv[2], &in_fd) != napi_ok || napi_get_value_int32(env, argv[3], &out_fd) != napi_ok ||
      napi_typeof(env, argv[4], &cb_type) != napi_ok || cb_type != napi_function) {
    napi_throw_type_error(env, NULL, USAGE);
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, argv[1], &n);
  char *command = buffer_string(env, argv[0]);
  char **envp = calloc(n + 1, sizeof(char *));
  bool bad = command == NULL;
  for (uint32_t i = 0; i < n && !bad; i++) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    envp[i] = buffer_string(env, v);
    bad = envp[i] == NULL;
  }
  if (bad) {
    for (uint32_t i = 0; i < n; i++) free(envp[i]);
    free(envp);
    free(command);
    napi_throw_type_error(env, NULL, USAGE);
    return NULL;
  }
  char *args[] = {"/bin/sh", "-c", command, NULL};
  napi_value result = NULL;
  int err_fds[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  if (pipe2(err_fds, O_CLOEXEC) != 0) {
    throw_errno(env, "pipe2", errno);
    goto done;
  }
  if (in_fd >= 0) posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err_fds[1], 2);
  sigset_t all, none;
  sigemptyset(&all);
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) sigaddset(&all, s); /* glibc refuses its own internal ones */
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all); /* Node ignores SIGPIPE; the filter must not */
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, args, envp);
  close(err_fds[1]);
  if (rc != 0) {
    close(err_fds[0]);
    throw_errno(env, "posix_spawn /bin/sh", rc);
    goto done;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    int e = errno;
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(err_fds[0]);
    throw_errno(env, "pidfd_open (filters need Linux 5.3 or later)", e);
    goto done;
  }
  child_t *c = calloc(1, sizeof *c);
  c->pidfd = pidfd;
  c->pid = pid;
  uv_loop_t *loop = NULL;
  napi_value name;
  napi_get_uv_event_loop(env, &loop);
  napi_create_string_utf8(env, "smtpsift filter exit", NAPI_AUTO_LENGTH, &name);
  int uerr = UV_EINVAL, polling = 0;
  if (loop == NULL ||
      napi_create_threadsafe_function(env, argv[4], NULL, name, 0, 1, NULL, NULL, NULL, call_exit, &c->tsfn) != napi_ok ||
      (uerr = uv_poll_init(loop, &c->poll, pidfd)) != 0 || (polling = 1, uerr = uv_poll_start(&c->poll, UV_READABLE, on_exit_ready)) != 0) {
    /* Nobody could reap it: it must not run unwatched. */
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(err_fds[0]);
    close(pidfd);
    if (c->tsfn != NULL) napi_release_threadsafe_function(c->tsfn, napi_tsfn_release);
    if (polling) uv_close((uv_handle_t *)&c->poll, free_child); /* the loop knows the handle */
    else free(c);
    throw_errno(env, "watching the filter's exit", uerr < 0 ? -uerr : EINVAL);
    goto done;
  }
  napi_value v;
  napi_create_object(env, &result);
  napi_create_int32(env, pid, &v);
  napi_set_named_property(env, result, "pid", v);
  napi_create_int32(env, err_fds[0], &v);
  napi_set_named_property(env, result, "stderr", v);
done:
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  for (uint32_t i = 0; i < n; i++) free(envp[i]);
  free(envp);
  free(command);
  return result;
}

void register_spawn(napi_env env, napi_value exports) {
  export_fn(env, exports, "spawnFilter", SpawnFilter);
}
