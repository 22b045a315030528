/*
 * A bare store-and-forward SMTP proxy in C, for measuring only (bench/README.md, `mb1`):
 * what receiving each message whole before DATA goes upstream costs on this machine, with
 * nothing else in the way. One thread per connection, blocking I/O; every command relayed
 * in lockstep; DATA answered 354 here, the data up to CRLF.CRLF written to an unlinked file
 * in SPOOLDIR, then DATA upstream and the file sent with sendfile (the client's bytes as
 * they came, already dot-stuffed). No checks, no limits, no SMTP beyond that: loopback only.
 *
 *   cc -O2 -pthread -o /tmp/store-forward bench/ceiling/store-forward.c
 *   /tmp/store-forward LISTENPORT UPSTREAMPORT SPOOLDIR
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static int upstream_port;
static const char *spool;
static long counter;

typedef struct {
  int fd;
  char buf[262144];
  size_t len, off;
} reader_t;

static int fill(reader_t *r) {
  if (r->off > 0) {
    memmove(r->buf, r->buf + r->off, r->len - r->off);
    r->len -= r->off;
    r->off = 0;
  }
  ssize_t n = read(r->fd, r->buf + r->len, sizeof r->buf - r->len);
  if (n <= 0) return -1;
  r->len += (size_t)n;
  return 0;
}

/* One line, CRLF included, into out (cut at max - 1). */
static int line(reader_t *r, char *out, size_t max) {
  for (;;) {
    char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
    if (nl != NULL) {
      size_t l = (size_t)(nl - (r->buf + r->off)) + 1, n = l < max ? l : max - 1;
      memcpy(out, r->buf + r->off, n);
      out[n] = 0;
      r->off += l;
      return (int)n;
    }
    if (fill(r)) return -1;
  }
}

/* One whole reply, multi-line included. */
static int reply(reader_t *r, char *out, size_t max) {
  size_t t = 0;
  for (;;) {
    int l = line(r, out + t, max - t);
    if (l < 0) return -1;
    int last = l >= 4 && out[t + 3] == ' ';
    t += (size_t)l;
    if (last || t + 1 >= max) return (int)t;
  }
}

static int write_all(int fd, const char *b, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w <= 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The client's data up to and including CRLF.CRLF, into f. */
static int receive(reader_t *c, int f) {
  static const char end[] = "\r\n.\r\n";
  size_t m = 2; /* the data starts at the start of a line */
  for (;;) {
    if (c->off == c->len && fill(c)) return -1;
    size_t i = c->off;
    int done = 0;
    for (; i < c->len && !done; i++) {
      char ch = c->buf[i];
      m = ch == end[m] ? m + 1 : ch == '\r' ? 1 : 0;
      done = m == 5;
    }
    if (write_all(f, c->buf + c->off, i - c->off)) return -1;
    c->off = i;
    if (done) return 0;
  }
}

static void *session(void *p) {
  reader_t *c = calloc(1, sizeof *c), *u = calloc(1, sizeof *u);
  char l[4096], rep[8192];
  int n, one = 1;
  c->fd = (int)(long)p;
  u->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(upstream_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(u->fd, (void *)&a, sizeof a) < 0) goto done;
  setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if ((n = reply(u, rep, sizeof rep)) < 0 || write_all(c->fd, rep, (size_t)n)) goto done;
  while ((n = line(c, l, sizeof l)) > 0) {
    if (strncasecmp(l, "DATA", 4) == 0) {
      char path[4096];
      snprintf(path, sizeof path, "%s/sf.%d.%ld", spool, getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
      int f = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
      if (f < 0) goto done;
      unlink(path);
      if (write_all(c->fd, "354 go on\r\n", 11) || receive(c, f)) goto fail;
      off_t size = lseek(f, 0, SEEK_END), at = 0;
      if (write_all(u->fd, "DATA\r\n", 6) || (n = reply(u, rep, sizeof rep)) < 0) goto fail;
      if (rep[0] == '3')
        while (at < size)
          if (sendfile(u->fd, f, &at, (size_t)(size - at)) <= 0) goto fail;
      if (rep[0] == '3' && (n = reply(u, rep, sizeof rep)) < 0) goto fail;
      close(f);
      if (write_all(c->fd, rep, (size_t)n)) goto done;
      continue;
    fail:
      close(f);
      goto done;
    }
    if (write_all(u->fd, l, (size_t)n) || (n = reply(u, rep, sizeof rep)) < 0 || write_all(c->fd, rep, (size_t)n)) break;
    if (strncasecmp(l, "QUIT", 4) == 0) break;
  }
done:
  close(c->fd);
  close(u->fd);
  free(c);
  free(u);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) return fprintf(stderr, "usage: store-forward LISTENPORT UPSTREAMPORT SPOOLDIR\n"), 2;
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  upstream_port = atoi(argv[2]);
  spool = argv[3];
  if (bind(l, (void *)&a, sizeof a) || listen(l, 511)) return perror("listen"), 1;
  for (;;) {
    int c = accept(l, NULL, NULL);
    pthread_t t;
    if (c >= 0 && pthread_create(&t, NULL, session, (void *)(long)c) == 0) pthread_detach(t);
  }
}
