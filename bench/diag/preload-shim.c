// Diagnostics for bench/county-vs-etcd.sh, not for production: an LD_PRELOAD library for the
// replicas that changes one thing at a time, to measure what it costs.
//   SHIM_NODELAY=1  sets TCP_NODELAY on every accepted socket (tonic's `tcp_nodelay(true)` is
//                   ignored by `serve_with_incoming*`, so `tally county`'s server sockets run
//                   with Nagle's algorithm)
//   SHIM_NOSYNC=1   makes fsync and fdatasync return at once (NOT durable: an upper bound only)
// Build: cc -O2 -shared -fPIC -o /tmp/preload-shim.so bench/diag/preload-shim.c -ldl
// Use:   SHIM_NODELAY=1 BENCH_PRELOAD=/tmp/preload-shim.so BENCH_ETCD=0 bench/county-vs-etcd.sh
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  int s = real(fd, addr, len, flags);
  if (s >= 0 && getenv("SHIM_NODELAY")) {
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return s;
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (getenv("SHIM_NOSYNC")) return 0;
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (getenv("SHIM_NOSYNC")) return 0;
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  return real(fd);
}
