/* A guest program for scripts/e2e-linux --vsock: listens on vsock port 1234, answers
 * one line from the host with "echo: LINE", then connects to the host (CID 2) on port
 * 5000, says "hello host" and prints what the host answers. Built static by the test
 * (gcc -static), so the busybox initramfs needs nothing else. */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_line(int fd, char *buffer, int size) {
    int n = 0;
    while (n < size - 1) {
        int r = (int)read(fd, buffer + n, 1);
        if (r <= 0) break;
        if (buffer[n++] == '\n') break;
    }
    buffer[n] = 0;
    return n;
}

int main(void) {
    int listener = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm any = { .svm_family = AF_VSOCK, .svm_port = 1234, .svm_cid = VMADDR_CID_ANY };
    if (listener < 0 || bind(listener, (struct sockaddr *)&any, sizeof any) != 0 || listen(listener, 1) != 0) {
        perror("vsock-echo: listen");
        return 1;
    }
    printf("vsock-listening\n");
    fflush(stdout);
    int c = accept(listener, 0, 0);
    if (c < 0) { perror("vsock-echo: accept"); return 1; }
    char line[256];
    int n = read_line(c, line, sizeof line);
    if (write(c, "echo: ", 6) != 6 || write(c, line, n) != n) perror("vsock-echo: write");
    close(c);
    printf("vsock-served: %s", line);
    fflush(stdout);

    int h = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm host = { .svm_family = AF_VSOCK, .svm_port = 5000, .svm_cid = VMADDR_CID_HOST };
    if (h < 0 || connect(h, (struct sockaddr *)&host, sizeof host) != 0) { perror("vsock-echo: connect"); return 1; }
    if (write(h, "hello host\n", 11) != 11) perror("vsock-echo: write");
    n = read_line(h, line, sizeof line);
    printf("vsock-host-said: %s", n > 0 ? line : "(nothing)\n");
    close(h);
    return 0;
}
