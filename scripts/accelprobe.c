/* accelprobe: what a hostile (or just multithreaded) container does with docker-up's
 * connect() acceleration. Static; the test image carries it (scripts/busybox-rootfs).
 * Each mode prints key=value lines; the tests judge from the workspace side as well.
 *
 *   reaim IP PORT SECRET      connect (swapped), then connect(AF_UNSPEC) and re-aim at
 *                             127.0.0.1:SECRET; also TCP fast open sendto there
 *   listen IP PORT LPORT      connect (swapped), read to EOF, then bind 0.0.0.0:LPORT and
 *                             listen; prints ready and holds the socket 8 s
 *   race IP PORT SECRET SECS [EVIL]  one thread flips the address between IP:PORT and
 *                             EVIL:SECRET (default 127.0.0.1) while another connects,
 *                             again and again
 *   dials IP PORT FILE SECS   connect, close, 20 ms pause, for SECS; each connect's time in
 *                             ms and result appended to FILE (SIGTERM ignored: it outlives
 *                             a dockerd that stops)
 *   fdrace IP PORT SECRET SECS  a swapped socket and an AF_UNIX socket flip places at one
 *                             fd number while a third thread connects that number to an
 *                             address that flips between AF_UNIX, AF_UNSPEC and SECRET
 *   thread IP PORT            connect and read a line from a second thread
 *   flood SECS                connect() with a bad pointer, as fast as it can
 *   latency IP PORT N         N sequential connects: p50 and p99 in microseconds
 *   stall IP PORT N           N threads connect to a listener that never accepts
 *   unix                      AF_UNIX: root and nobody connect to a root-only socket
 *   uring                     io_uring_setup(): must be refused where connect() is judged
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

static struct sockaddr_in addr_of(const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static const char *err(int r) { return r == 0 ? "ok" : strerrorname_np(errno); }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* A connected socket to ip:port; non-blocking connect + poll, as Go or Node would. */
static int dial(const char *ip, int port) {
  struct sockaddr_in a = addr_of(ip, port);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int fl = fcntl(s, F_GETFL);
  fcntl(s, F_SETFL, fl | O_NONBLOCK);
  int r = connect(s, (struct sockaddr *)&a, sizeof a);
  if (r < 0 && errno == EINPROGRESS) {
    struct pollfd p = {.fd = s, .events = POLLOUT};
    poll(&p, 1, 10000);
    int e = 0;
    socklen_t l = sizeof e;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
    r = e ? -1 : 0;
    errno = e;
  }
  fcntl(s, F_SETFL, fl);
  printf("dial=%s\n", err(r));
  return r == 0 ? s : -1;
}

static void read_all(int s) {
  char buf[256];
  ssize_t n, total = 0;
  while ((n = read(s, buf, sizeof buf)) > 0) total += n;
  printf("read=%zd\n", total);
}

static int reaim(char **v) {
  int s = dial(v[0], atoi(v[1]));
  if (s < 0) return 1;
  struct sockaddr un = {.sa_family = AF_UNSPEC};
  printf("unspec=%s\n", err(connect(s, &un, sizeof un)));
  struct sockaddr_in secret = addr_of("127.0.0.1", atoi(v[2]));
  printf("reaim=%s\n", err(connect(s, (struct sockaddr *)&secret, sizeof secret)));
  printf("fastopen=%s\n",
         err(sendto(s, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&secret, sizeof secret) < 0 ? -1 : 0));
  char buf[64] = {0};
  struct timeval tv = {1, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = read(s, buf, sizeof buf - 1);
  printf("got=%s\n", n > 0 ? buf : "");
  /* Once the connection is over (the peer closed, we shut down), fast open twice: a socket
   * the kernel still thought "connecting" would be reset by the first and aimed by the
   * second. */
  read_all(s);
  shutdown(s, SHUT_RDWR);
  usleep(200000);
  for (int i = 0; i < 2; i++) {
    int r = sendto(s, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&secret, sizeof secret) < 0 ? -1 : 0;
    printf("fastopen_closed%d=%s\n", i, err(r));
  }
  n = read(s, buf, sizeof buf - 1);
  printf("got_closed=%s\n", n > 0 ? buf : "");
  return 0;
}

static int listen_mode(char **v) {
  int s = dial(v[0], atoi(v[1]));
  if (s < 0) return 1;
  read_all(s); /* the peer closes: the socket is CLOSE_WAIT, then shut down: CLOSED */
  shutdown(s, SHUT_RDWR);
  usleep(200000);
  struct sockaddr un = {.sa_family = AF_UNSPEC};
  printf("unspec=%s\n", err(connect(s, &un, sizeof un)));
  struct sockaddr_in any = addr_of("0.0.0.0", atoi(v[2]));
  printf("bind=%s\n", err(bind(s, (struct sockaddr *)&any, sizeof any)));
  printf("listen=%s\n", err(listen(s, 16)));
  printf("ready\n");
  fflush(stdout);
  sleep(8);
  return 0;
}

/* -- races --------------------------------------------------------------------------- */

static volatile int stop;
static struct sockaddr_storage shared; /* what the connecting thread passes */
static struct sockaddr_in good, evil;

/* Without a barrier the compiler drops every store but the last, and nothing flips. */
#define FLIP(src) do { memcpy(&shared, &(src), sizeof(src)); __asm__ volatile("" ::: "memory"); } while (0)

static void *flip_inet(void *unused) {
  (void)unused;
  while (!stop) {
    FLIP(good);
    FLIP(evil);
  }
  return NULL;
}

static int race(char **v) {
  good = addr_of(v[0], atoi(v[1]));
  evil = addr_of(v[4] ? v[4] : "127.0.0.1", atoi(v[2]));
  double until = now() + atof(v[3]);
  pthread_t t;
  pthread_create(&t, NULL, flip_inet, NULL);
  int tries = 0, connected = 0, leaks = 0;
  while (now() < until) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    tries++;
    if (connect(s, (struct sockaddr *)&shared, sizeof(struct sockaddr_in)) == 0) {
      connected++;
      char buf[16] = {0};
      struct timeval tv = {1, 0};
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (read(s, buf, sizeof buf - 1) > 0 && strncmp(buf, "secret", 6) == 0) leaks++;
    }
    close(s);
  }
  stop = 1;
  pthread_join(t, NULL);
  printf("tries=%d\nconnected=%d\nleaks=%d\n", tries, connected, leaks);
  return 0;
}

static int target_fd = 100, wsock, usock;
static struct sockaddr_un unix_addr = {.sun_family = AF_UNIX, .sun_path = "/tmp/fdrace.sock"};

static void *flip_fd(void *unused) {
  (void)unused;
  while (!stop) {
    dup2(wsock, target_fd);
    __asm__ volatile("" ::: "memory");
    dup2(usock, target_fd);
  }
  return NULL;
}

static void *flip_family(void *unused) {
  (void)unused;
  struct sockaddr un = {.sa_family = AF_UNSPEC};
  while (!stop) {
    FLIP(unix_addr);
    FLIP(un);
    FLIP(unix_addr);
    FLIP(evil);
  }
  return NULL;
}

static int fdrace(char **v) {
  evil = addr_of(v[4] ? v[4] : "127.0.0.1", atoi(v[2]));
  wsock = dial(v[0], atoi(v[1]));
  if (wsock < 0) return 1;
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(unix_addr.sun_path);
  bind(l, (struct sockaddr *)&unix_addr, sizeof unix_addr);
  listen(l, 1024);
  usock = socket(AF_UNIX, SOCK_STREAM, 0);
  double until = now() + atof(v[3]);
  pthread_t a, b;
  pthread_create(&a, NULL, flip_fd, NULL);
  pthread_create(&b, NULL, flip_family, NULL);
  int tries = 0;
  while (now() < until) {
    connect(target_fd, (struct sockaddr *)&shared, sizeof(struct sockaddr_un));
    tries++;
  }
  stop = 1;
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  struct sockaddr_in peer;
  socklen_t pl = sizeof peer;
  int r = getpeername(wsock, (struct sockaddr *)&peer, &pl);
  printf("tries=%d\nstill_connected=%s\n", tries, r == 0 ? "yes" : "no");
  return 0;
}

/* -- threads, floods, latency ------------------------------------------------------- */

static char **thread_args;
static void *thread_dial(void *unused) {
  (void)unused;
  int s = dial(thread_args[0], atoi(thread_args[1]));
  if (s >= 0) {
    char buf[64] = {0};
    if (read(s, buf, sizeof buf - 1) > 0) printf("line=%s", buf);
  }
  return NULL;
}

static int thread_mode(char **v) {
  thread_args = v;
  pthread_t t;
  pthread_create(&t, NULL, thread_dial, NULL);
  pthread_join(t, NULL);
  return 0;
}

static int flood(char **v) {
  double until = now() + atof(v[0]);
  int s = socket(AF_INET, SOCK_STREAM, 0), n = 0, efault = 0;
  while (now() < until) {
    n++;
    if (connect(s, (struct sockaddr *)1, sizeof(struct sockaddr_in)) < 0 && errno == EFAULT) efault++;
  }
  printf("calls=%d\nefault=%d\n", n, efault);
  return 0;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int latency(char **v) {
  int n = atoi(v[2]);
  double *t = calloc(n, sizeof *t);
  struct sockaddr_in a = addr_of(v[0], atoi(v[1]));
  int ok = 0;
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now();
    ok += connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    t[i] = (now() - t0) * 1e6;
    close(s);
  }
  qsort(t, n, sizeof *t, cmp);
  printf("ok=%d\np50_us=%.0f\np99_us=%.0f\n", ok, t[n / 2], t[n * 99 / 100]);
  return 0;
}

static int dials(char **v) {
  struct sockaddr_in a = addr_of(v[0], atoi(v[1]));
  FILE *f = fopen(v[2], "a");
  if (!f) return 1;
  signal(SIGTERM, SIG_IGN);
  double until = now() + atof(v[3]);
  printf("ready\n");
  while (now() < until) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now();
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    fprintf(f, "ms=%.1f r=%s\n", (now() - t0) * 1e3, err(r));
    fflush(f);
    close(s);
    usleep(20000);
  }
  return 0;
}

static struct sockaddr_in stall_to;
static void *stall_one(void *unused) {
  (void)unused;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  connect(s, (struct sockaddr *)&stall_to, sizeof stall_to); /* hangs: SYNs dropped */
  return NULL;
}

static int stall(char **v) {
  stall_to = addr_of(v[0], atoi(v[1]));
  int n = atoi(v[2]);
  for (int i = 0; i < n; i++) {
    pthread_t t;
    pthread_create(&t, NULL, stall_one, NULL);
  }
  printf("ready\n");
  fflush(stdout);
  sleep(3600);
  return 0;
}

/* AF_UNIX connects go through a child of the agent that becomes the caller: the result
 * must be the kernel's own for each caller (root: yes; nobody: EACCES on a 0700 dir). */
static int unix_mode(void) {
  mkdir("/tmp/private", 0700);
  struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "/tmp/private/s"};
  unlink(a.sun_path);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) return 1;
  int c = socket(AF_UNIX, SOCK_STREAM, 0);
  printf("root=%s\n", err(connect(c, (struct sockaddr *)&a, sizeof a)));
  struct sockaddr_un rel = {.sun_family = AF_UNIX, .sun_path = "s"};
  chdir("/tmp/private");
  c = socket(AF_UNIX, SOCK_STREAM, 0);
  printf("relative=%s\n", err(connect(c, (struct sockaddr *)&rel, sizeof rel)));
  fflush(stdout);
  if (fork() == 0) {
    chdir("/");
    if (setgid(65534) || setuid(65534)) _exit(1);
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("nobody=%s\n", err(connect(c, (struct sockaddr *)&a, sizeof a)));
    _exit(0);
  }
  wait(NULL);
  return 0;
}

static int uring(void) {
  char params[120] = {0};
  long fd = syscall(SYS_io_uring_setup, 4, params);
  printf("io_uring=%s\n", err(fd < 0 ? -1 : 0));
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) return 2;
  char *m = argv[1], **v = argv + 2;
  int n = argc - 2;
  if (!strcmp(m, "reaim") && n == 3) return reaim(v);
  if (!strcmp(m, "listen") && n == 3) return listen_mode(v);
  if (!strcmp(m, "race") && (n == 4 || n == 5)) return race(v);
  if (!strcmp(m, "dials") && n == 4) return dials(v);
  if (!strcmp(m, "fdrace") && n == 4) return fdrace(v);
  if (!strcmp(m, "thread") && n == 2) return thread_mode(v);
  if (!strcmp(m, "flood") && n == 1) return flood(v);
  if (!strcmp(m, "latency") && n == 3) return latency(v);
  if (!strcmp(m, "stall") && n == 3) return stall(v);
  if (!strcmp(m, "unix") && n == 0) return unix_mode();
  if (!strcmp(m, "uring") && n == 0) return uring();
  fprintf(stderr, "usage: see the top of accelprobe.c\n");
  return 2;
}
