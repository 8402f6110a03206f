// The kernel's own price for a task's namespaces, as a floor for benches/sandbox_overhead.sh:
// clone3 of a child into new user, mount, pid, ipc and uts namespaces (what grit's sandbox
// creates for every task), which exits at once; the parent waits for it. No mounts, no exec.
// Compare with the same clone3 without namespaces. Prints numbers only.
//
// usage: ns_floor [N]   (default 1000)
#define _GNU_SOURCE
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double per_clone(unsigned long long flags, int n) {
    double start = now_us();
    for (int i = 0; i < n; i++) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags;
        args.exit_signal = SIGCHLD;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid < 0) {
            perror("clone3");
            exit(1);
        }
        int status;
        waitpid((pid_t)pid, &status, 0);
    }
    return (now_us() - start) / n / 1000.0;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    unsigned long long all =
        CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    double plain = per_clone(0, n);
    double ns = per_clone(all, n);
    printf("namespace floor: clone3+exit+wait %.3f ms plain, %.3f ms with user/mount/pid/ipc/uts "
           "namespaces: +%.3f ms\n", plain, ns, ns - plain);
    return 0;
}
