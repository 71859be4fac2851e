/* UDP for the test image (busybox's nc has no UDP):
 *   udpecho PORT           an echo server; prints each sender's address (what it sees)
 *   udpecho HOST PORT MSG  a client: connect(), send MSG, print the reply (2 s timeout) */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    char buf[65536];
    if (argc == 4) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        struct timeval tv = {.tv_sec = 2};
        inet_pton(AF_INET, argv[1], &a.sin_addr);
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
        for (int i = 0; i < 5; i++) {  /* the first datagram may race a forwarder's set-up */
            send(s, argv[3], strlen(argv[3]), 0);
            ssize_t n = recv(s, buf, sizeof buf - 1, 0);
            if (n >= 0) { buf[n] = 0; puts(buf); return 0; }
        }
        return 1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a)) return 1;
    for (;;) {
        struct sockaddr_in peer; socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n < 0) continue;
        printf("from %s\n", inet_ntoa(peer.sin_addr));
        fflush(stdout);
        sendto(s, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
