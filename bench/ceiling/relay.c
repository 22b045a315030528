/*
 * A bare TCP relay in C, for measuring only (bench/README.md, `mb1`): what any proxy costs
 * on this machine when it does nothing but copy. One thread per direction of each
 * connection, blocking I/O, 256 KiB buffers, TCP_NODELAY. Loopback only, no limits.
 *
 *   cc -O2 -pthread -o /tmp/relay bench/ceiling/relay.c
 *   /tmp/relay LISTENPORT UPSTREAMPORT    # then smtp-source ... 127.0.0.1:LISTENPORT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct pair {
  int from, to;
};
static int upstream_port;

static void *pump(void *p) {
  struct pair *pr = p;
  static __thread char buf[262144];
  for (;;) {
    ssize_t n = read(pr->from, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(pr->to, buf + o, (size_t)(n - o));
      if (w <= 0) goto out;
      o += w;
    }
  }
out:
  shutdown(pr->to, SHUT_WR);
  return NULL;
}

static void *conn(void *p) {
  int c = (int)(long)p, u = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(upstream_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(u, (void *)&a, sizeof a) == 0) {
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pair up = {c, u}, down = {u, c};
    pthread_t t;
    pthread_create(&t, NULL, pump, &up);
    pump(&down);
    pthread_join(t, NULL);
  }
  close(c);
  close(u);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) return fprintf(stderr, "usage: relay LISTENPORT UPSTREAMPORT\n"), 2;
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  upstream_port = atoi(argv[2]);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 511)) return perror("listen"), 1;
  for (;;) {
    int c = accept(l, NULL, NULL);
    pthread_t t;
    if (c >= 0 && pthread_create(&t, NULL, conn, (void *)(long)c) == 0) pthread_detach(t);
  }
}
