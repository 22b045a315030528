/*
 * relayData(clientFd, upstreamFd, initial, timeoutMs, decoderState, encoderFlags, onDone)
 *   -> handle; cancelRelay(handle)
 *
 * CutThrough's DATA body on a thread of its own: the client's data is read, unstuffed and
 * stuffed again with CRLF endings (the same state machines as src/smtp/dot.ts and dot.c),
 * and written to the upstream as it comes, up to and including the client's CRLF.CRLF.
 * The event loop passes the start of the message (its first 64 KiB, and the Header), then
 * hands over its decoder's state and encoder's flags.
 * Through the event loop, the body of a 1 MB message took the daemon's one thread a few
 * ms of CPU here, the replies of every other session waiting behind it; this thread moves
 * the MB in about 1 ms of its own, beside the loop (issue 7: 1 MB messages).
 *
 * The caller has stopped reading the client socket and writes nothing to either socket
 * until onDone; the thread works on duplicates of both descriptors, so that a socket the
 * daemon closes meanwhile is never a number reused by another file. `initial` holds the
 * data already read. Memory is two fixed buffers per relay.
 *
 * onDone(result) gets:
 *   status    "done" (the end of data was read and, unless upstreamError, written),
 *             "eof" (the client closed first, or right after its end of data: nobody would
 *             hear the reply), "timeout" (the client sent nothing for timeoutMs), "error"
 *             (reading the client failed), or "cancelled" (cancelRelay);
 *   upstreamError   undefined, or why writing to the upstream failed ("timeout" or the
 *             errno text); the client's data is then still read to its end and dropped;
 *   size      bytes of message received here (unstuffed, as the client sent its line ends);
 *   contentBytes    bytes the upstream stores of them (unstuffed, CRLF endings);
 *   leftover  what the client sent after its end of data (pipelined commands).
 * The end of data is written only with status "done": a message the client did not finish
 * is never ended upstream, and the caller then drops the upstream connection.
 */
#define _GNU_SOURCE
#include "addon.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_SIZE (64 * 1024)
/* A chunk decodes to at most its own bytes and a CR held from the chunk before; encoding
   at most doubles them, +2 for a pending CR's LF, +5 for the end of data. */
#define OUT_SIZE (2 * (IN_SIZE + 1) + 2 + 5)

/* The decoder's states, numbered as In in src/smtp/dot.ts. */
enum { MID, MID_CR, LINE_START, DOT, DOT_CR };

typedef struct {
  int in, out, wake;
  int timeout_ms;
  atomic_int cancelled;
  unsigned char *initial;
  size_t initial_len;
  /* decoder and encoder state */
  int state;
  int32_t enc_flags;
  /* results */
  const char *status;
  char upstream_error[128];
  double size, content;
  /* In `initial` or `buf`, which live as long as the relay. */
  const unsigned char *leftover;
  size_t leftover_len;
  unsigned char *buf, *outbuf;
  size_t used; /* bytes of outbuf to write */
  napi_threadsafe_function tsfn;
} relay_t;

/* Waits for `events` on fd or the wake-up: 1 ready, 0 timeout, -1 cancelled, -2 poll failed (errno). */
static int wait_for(relay_t *r, int fd, short events) {
  struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = r->wake, .events = POLLIN}};
  for (;;) {
    if (atomic_load(&r->cancelled)) return -1;
    int n = poll(p, 2, r->timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -2;
    if (n == 0) return 0;
    if (p[1].revents) return -1;
    return 1;
  }
}

/* Writes outbuf to the upstream; on failure notes why, and the rest of the data is dropped. */
static int flush_out(relay_t *r) {
  size_t done = 0;
  while (done < r->used && r->upstream_error[0] == 0) {
    ssize_t n = send(r->out, r->outbuf + done, r->used - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_for(r, r->out, POLLOUT);
      if (w == 1) continue;
      if (w == -1) return -1;
      if (w == 0) strcpy(r->upstream_error, "timeout");
      else snprintf(r->upstream_error, sizeof r->upstream_error, "%s", strerror(errno));
      break;
    }
    snprintf(r->upstream_error, sizeof r->upstream_error, "%s", n == 0 ? "connection closed" : strerror(errno));
  }
  r->used = 0;
  return 0;
}

static void emit(relay_t *r, const unsigned char *p, size_t len) {
  int32_t dots = 0;
  r->size += (double)len;
  size_t n = dot_encode(p, len, r->outbuf + r->used, &r->enc_flags, &dots);
  r->used += n;
  r->content += (double)n - dots;
}

/* The end of data, as DotEncoder.end(). */
static void emit_end(relay_t *r) {
  int needs_crlf = (r->enc_flags & DOT_PENDING_CR) || !(r->enc_flags & DOT_LINE_START);
  const char *end = needs_crlf ? "\r\n.\r\n" : ".\r\n";
  if (needs_crlf) r->content += 2;
  memcpy(r->outbuf + r->used, end, strlen(end));
  r->used += strlen(end);
}

/* Decodes one chunk into outbuf (DotDecoder.feed); returns the bytes used up to and
   including the terminator, or len when the data goes on. *done tells which. */
static size_t feed(relay_t *r, const unsigned char *buf, size_t len, int *done) {
  size_t seg = 0, i = 0;
  static const unsigned char cr = '\r';
  *done = 0;
  while (i < len) {
    switch (r->state) {
    case MID: {
      ptrdiff_t j = dot_crlf_dot(buf, i, len);
      if (j >= 0) {
        i = (size_t)j + 2;
        r->state = LINE_START;
      } else {
        if (buf[len - 1] == '\r') r->state = MID_CR;
        else if (len >= i + 2 && buf[len - 2] == '\r' && buf[len - 1] == '\n') r->state = LINE_START;
        i = len;
      }
      break;
    }
    case MID_CR: {
      unsigned char b = buf[i++];
      r->state = b == '\n' ? LINE_START : b == '\r' ? MID_CR : MID;
      break;
    }
    case LINE_START: {
      unsigned char b = buf[i];
      if (b == '.') {
        if (i > seg) emit(r, buf + seg, i - seg);
        seg = ++i;
        r->state = DOT;
      } else {
        i++;
        r->state = b == '\r' ? MID_CR : MID;
      }
      break;
    }
    case DOT:
      if (buf[i] == '\r') {
        seg = ++i;
        r->state = DOT_CR;
      } else {
        r->state = MID;
      }
      break;
    case DOT_CR:
      if (buf[i] == '\n') {
        *done = 1;
        return i + 1;
      }
      emit(r, &cr, 1);
      r->state = MID_CR;
      break;
    }
  }
  if (len > seg && r->state != DOT_CR) emit(r, buf + seg, len - seg);
  return len;
}

/* One chunk of client data: decoded, encoded, written. Returns 1 at the end of data. */
static int take(relay_t *r, const unsigned char *p, size_t len) {
  int done;
  size_t used = feed(r, p, len, &done);
  if (done) {
    r->leftover = p + used;
    r->leftover_len = len - used;
    /* The client closed as it ended: nobody would hear the reply, and it will send again. */
    struct pollfd h = {.fd = r->in, .events = POLLRDHUP};
    if (poll(&h, 1, 0) == 1 && (h.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      r->status = "eof";
      return 1;
    }
    emit_end(r);
  }
  if (r->upstream_error[0] == 0 && flush_out(r) < 0) {
    r->status = "cancelled";
    return 1;
  }
  r->used = 0;
  if (done) r->status = "done";
  return done;
}

static void *run(void *arg) {
  relay_t *r = arg;
  int over = 0;
  for (size_t at = 0; at < r->initial_len && !over; at += IN_SIZE) {
    size_t n = r->initial_len - at < IN_SIZE ? r->initial_len - at : IN_SIZE;
    over = take(r, r->initial + at, n);
  }
  if (!over) {
    for (;;) {
      ssize_t n = read(r->in, r->buf, IN_SIZE);
      if (n > 0) {
        if (take(r, r->buf, (size_t)n)) break;
        continue;
      }
      if (n == 0) {
        r->status = "eof";
        break;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        r->status = "error";
        break;
      }
      int w = wait_for(r, r->in, POLLIN);
      if (w == 1) continue;
      r->status = w == 0 ? "timeout" : w == -1 ? "cancelled" : "error";
      break;
    }
  }
  close(r->in);
  close(r->out);
  /* r may be freed by call_done as soon as it is queued. */
  napi_threadsafe_function tsfn = r->tsfn;
  napi_call_threadsafe_function(tsfn, r, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

static void free_relay(relay_t *r) {
  if (r->wake >= 0) close(r->wake);
  free(r->initial);
  free(r->buf);
  free(r->outbuf);
  free(r);
}

static void set_number(napi_env env, napi_value obj, const char *name, double v) {
  napi_value x;
  napi_create_double(env, v, &x);
  napi_set_named_property(env, obj, name, x);
}

/* On the JS thread: onDone(result); then the relay is freed (cancelRelay is no longer allowed). */
static void call_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  relay_t *r = data;
  if (env != NULL && js_cb != NULL) {
    napi_value result, v, undefined;
    napi_create_object(env, &result);
    napi_create_string_utf8(env, r->status, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, result, "status", v);
    if (r->upstream_error[0] != 0) {
      napi_create_string_utf8(env, r->upstream_error, NAPI_AUTO_LENGTH, &v);
      napi_set_named_property(env, result, "upstreamError", v);
    }
    set_number(env, result, "size", r->size);
    set_number(env, result, "contentBytes", r->content);
    void *copy;
    napi_create_buffer_copy(env, r->leftover_len, r->leftover_len > 0 ? (const void *)r->leftover : "", &copy, &v);
    napi_set_named_property(env, result, "leftover", v);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, js_cb, 1, &result, NULL);
  }
  free_relay(r);
}

static napi_value RelayData(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int32_t client, upstream, timeout, state, flags;
  void *initial;
  size_t initial_len;
  napi_valuetype cb_type = napi_undefined;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7 || napi_get_value_int32(env, argv[0], &client) != napi_ok || napi_get_value_int32(env, argv[1], &upstream) != napi_ok ||
      napi_get_buffer_info(env, argv[2], &initial, &initial_len) != napi_ok || napi_get_value_int32(env, argv[3], &timeout) != napi_ok ||
      napi_get_value_int32(env, argv[4], &state) != napi_ok || state < MID || state > DOT_CR ||
      napi_get_value_int32(env, argv[5], &flags) != napi_ok || flags < 0 || flags > (DOT_LINE_START | DOT_PENDING_CR) ||
      napi_typeof(env, argv[6], &cb_type) != napi_ok || cb_type != napi_function) {
    napi_throw_type_error(env, NULL, "relayData(clientFd, upstreamFd, initial: Buffer, timeoutMs, decoderState, encoderFlags, onDone)");
    return NULL;
  }
  relay_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    throw_errno(env, "relayData", ENOMEM);
    return NULL;
  }
  r->in = r->out = r->wake = -1;
  r->timeout_ms = timeout > 0 ? timeout : 1;
  r->state = state;
  r->enc_flags = flags;
  r->status = "error";
  r->buf = malloc(IN_SIZE);
  r->outbuf = malloc(OUT_SIZE);
  r->initial = malloc(initial_len > 0 ? initial_len : 1);
  int err = r->buf == NULL || r->outbuf == NULL || r->initial == NULL ? ENOMEM : 0;
  if (err == 0) {
    memcpy(r->initial, initial, initial_len);
    r->initial_len = initial_len;
    r->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->wake >= 0) r->in = fcntl(client, F_DUPFD_CLOEXEC, 3);
    if (r->in >= 0) r->out = fcntl(upstream, F_DUPFD_CLOEXEC, 3);
    if (r->out < 0) err = errno;
  }
  if (err != 0) {
    if (r->in >= 0) close(r->in);
    free_relay(r);
    throw_errno(env, "relayData", err);
    return NULL;
  }
  napi_value name;
  napi_create_string_utf8(env, "relayData", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[6], NULL, name, 0, 1, NULL, NULL, NULL, call_done, &r->tsfn) != napi_ok) {
    close(r->in);
    close(r->out);
    free_relay(r);
    napi_throw_error(env, NULL, "relayData: no thread-safe function");
    return NULL;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t t;
  err = pthread_create(&t, &attr, run, r);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
    close(r->in);
    close(r->out);
    free_relay(r);
    throw_errno(env, "pthread_create", err);
    return NULL;
  }
  napi_value handle;
  napi_create_external(env, r, NULL, NULL, &handle);
  return handle;
}

/* Stops a relay before its end of data is written; onDone still comes, with "cancelled". */
static napi_value CancelRelay(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "cancelRelay(handle)");
    return NULL;
  }
  relay_t *r = p;
  atomic_store(&r->cancelled, 1);
  uint64_t one = 1;
  ssize_t n = write(r->wake, &one, sizeof one);
  (void)n;
  return NULL;
}

void register_pump(napi_env env, napi_value exports) {
  export_fn(env, exports, "relayData", RelayData);
  export_fn(env, exports, "cancelRelay", CancelRelay);
}
