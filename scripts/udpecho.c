/* A UDP echo server for the test image (busybox has none): udpecho PORT */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a)) return 1;
    char buf[65536];
    for (;;) {
        struct sockaddr_in peer; socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
