/* TCP request/response latency and connection rate, for scripts/bench.
 *   tcprr -s PORT [ADDR]          echo server on ADDR:PORT (127.0.0.1 unless given; a
 *                                 process per connection)
 *   tcprr HOST PORT COUNT CONNS   COUNT round trips of 64 bytes on one connection, then
 *                                 CONNS connect+1 round trip+close; prints one JSON line:
 *                                 {"rtt_p50_us":..,"rtt_p99_us":..,"connects_per_s":..}
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int full(int fd, char *buf, int n, int out) {
    for (int done = 0; done < n;) {
        ssize_t r = out ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (r <= 0) return -1;
        done += r;
    }
    return 0;
}

static int dial(struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)a, sizeof *a)) { perror("connect"); exit(1); }
    return fd;
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static int serve(int port, const char *addr) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (addr && inet_pton(AF_INET, addr, &a.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 1; }
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) { perror("bind"); return 1; }
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            char buf[64];
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            while (full(c, buf, sizeof buf, 0) == 0 && full(c, buf, sizeof buf, 1) == 0) {}
            _exit(0);
        }
        close(c);
    }
}

int main(int argc, char **argv) {
    if ((argc == 3 || argc == 4) && !strcmp(argv[1], "-s")) return serve(atoi(argv[2]), argc == 4 ? argv[3] : NULL);
    if (argc != 5) { fprintf(stderr, "usage: tcprr HOST PORT COUNT CONNS | -s PORT [ADDR]\n"); return 2; }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int count = atoi(argv[3]), conns = atoi(argv[4]);
    char buf[64] = "ping";
    double *rtt = calloc(count, sizeof *rtt);
    int fd = dial(&a);
    for (int i = 0; i < count; i++) {
        double t = now();
        if (full(fd, buf, sizeof buf, 1) || full(fd, buf, sizeof buf, 0)) { perror("rr"); return 1; }
        rtt[i] = now() - t;
    }
    close(fd);
    qsort(rtt, count, sizeof *rtt, cmp);
    double t0 = now();
    for (int i = 0; i < conns; i++) {
        fd = dial(&a);
        if (full(fd, buf, sizeof buf, 1) || full(fd, buf, sizeof buf, 0)) { perror("conn"); return 1; }
        close(fd);
    }
    double rate = conns / (now() - t0);
    printf("{\"rtt_p50_us\": %.1f, \"rtt_p99_us\": %.1f, \"connects_per_s\": %.1f}\n",
           rtt[count / 2] * 1e6, rtt[count * 99 / 100] * 1e6, rate);
    return 0;
}
