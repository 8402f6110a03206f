// The kernel's own price for a task's sandbox, as a floor for benches/sandbox_overhead.sh and
// issue 16: what the namespaces, the mounts a task needs and the process layout cost here with
// nothing of grit around them. Prints numbers only.
//
// 1. clone3 of a child into new user, mount, pid, ipc and uts namespaces (what grit's sandbox
//    creates for every task), which exits at once; the parent waits for it. No mounts, no exec.
//    Compared with the same clone3 without namespaces.
// 2. Whole tasks, each running /bin/true, in the shapes a sandbox could take (wall time per task
//    one after the other, and the busy CPU of the whole machine per task from /proc/stat, which
//    counts the kernel's deferred teardown too):
//    - bare: vfork + exec, no sandbox (the floor of the floor);
//    - fresh: grit's shape: an init cloned into the five namespaces writes its id maps, mounts
//      a tmpfs on /tmp and a proc on /proc, then vforks the task and reaps it;
//    - fresh, shared memory: the same with init cloned with CLONE_VM, so that no page table is
//      copied and none torn down (what it would save grit's init, a fork of the zygote);
//    - reused: one worker in the five namespaces runs every task: fork, a fresh tmpfs on /tmp,
//      exec, then unmount;
//    - reused, own mount and ipc: the same with a new mount and ipc namespace per task.
//
// usage: ns_floor [N]   (default 1000; root or unprivileged user namespaces)
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
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

// ---- whole tasks ----------------------------------------------------------------------------

static char *const task_argv[] = {"/bin/true", NULL};
static char *const task_env[] = {NULL};
static char init_stack[1 << 16] __attribute__((aligned(16)));
static char task_stack[1 << 16] __attribute__((aligned(16)));
static uid_t uid;
static gid_t gid;

static void fail(const char *what) {
    perror(what);
    _exit(1);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) fail(path);
    close(fd);
}

static void write_maps(void) {
    char line[64];
    write_file("/proc/self/setgroups", "deny");
    snprintf(line, sizeof line, "%d %d 1", uid, uid);
    write_file("/proc/self/uid_map", line);
    snprintf(line, sizeof line, "%d %d 1", gid, gid);
    write_file("/proc/self/gid_map", line);
}

static int exec_task(void *unused) {
    (void)unused;
    execve(task_argv[0], task_argv, task_env);
    _exit(127);
}

// vfork + exec of the task, then wait: the child shares the caller's memory until it execs.
static void run_task(void) {
    pid_t pid = clone(exec_task, task_stack + sizeof task_stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                      NULL);
    if (pid < 0) fail("clone task");
    int status;
    waitpid(pid, &status, 0);
}

static int fresh_init(void *unused) {
    (void)unused;
    write_maps();
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")) fail("mount /tmp");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) fail("mount /proc");
    run_task();
    _exit(0);
}

static long busy_ticks(void) {
    long user, nice, sys, idle, iowait, irq, softirq;
    FILE *f = fopen("/proc/stat", "r");
    if (!f || fscanf(f, "cpu %ld %ld %ld %ld %ld %ld %ld", &user, &nice, &sys, &idle, &iowait,
                     &irq, &softirq) != 7)
        fail("/proc/stat");
    fclose(f);
    return user + nice + sys + irq + softirq;
}

struct measured {
    double wall_ms, busy_ms;
};

static void tasks_fresh(int n, int shared_memory) {
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
    if (shared_memory) flags |= CLONE_VM;
    for (int i = 0; i < n; i++) {
        pid_t pid = clone(fresh_init, init_stack + sizeof init_stack, flags, NULL);
        if (pid < 0) fail("clone init");
        int status;
        waitpid(pid, &status, 0);
        if (status != 0) {
            fprintf(stderr, "init ended with status %d\n", status);
            exit(1);
        }
    }
}

// Runs in a child of the benchmark, which becomes the worker's namespaces' owner.
static void tasks_reused(int n, int own_mount_and_ipc) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS))
        fail("unshare");
    write_maps();
    pid_t worker = fork();
    if (worker < 0) fail("fork worker");
    if (worker == 0) {
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
            fail("mount /proc");
        for (int i = 0; i < n; i++) {
            pid_t task = fork();
            if (task < 0) fail("fork task");
            if (task == 0) {
                if (own_mount_and_ipc && unshare(CLONE_NEWNS | CLONE_NEWIPC)) fail("unshare task");
                if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"))
                    fail("mount /tmp");
                execve(task_argv[0], task_argv, task_env);
                _exit(127);
            }
            int status;
            waitpid(task, &status, 0);
            if (!own_mount_and_ipc) umount2("/tmp", MNT_DETACH);
        }
        _exit(0);
    }
    int status;
    waitpid(worker, &status, 0);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

static struct measured measure(const char *shape, int n) {
    double start = now_us();
    long ticks = busy_ticks();
    if (!strcmp(shape, "bare")) {
        for (int i = 0; i < n; i++) run_task();
    } else if (!strcmp(shape, "fresh")) {
        tasks_fresh(n, 0);
    } else if (!strcmp(shape, "fresh-vm")) {
        tasks_fresh(n, 1);
    } else {
        pid_t child = fork();
        if (child < 0) fail("fork");
        if (child == 0) tasks_reused(n, !strcmp(shape, "reused-ns"));
        int status;
        waitpid(child, &status, 0);
        if (status != 0) {
            fprintf(stderr, "%s: status %d\n", shape, status);
            exit(1);
        }
    }
    struct measured m;
    m.wall_ms = (now_us() - start) / n / 1000.0;
    m.busy_ms = (double)(busy_ticks() - ticks) * 1000.0 / sysconf(_SC_CLK_TCK) / n;
    return m;
}

static double median3(const double v[3]) {
    double lo = v[0] < v[1] ? v[0] : v[1], hi = v[0] < v[1] ? v[1] : v[0];
    return v[2] < lo ? lo : (v[2] > hi ? hi : v[2]);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    uid = geteuid();
    gid = getegid();
    unsigned long long all =
        CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    double plain = per_clone(0, n);
    double ns = per_clone(all, n);
    printf("namespace floor: clone3+exit+wait %.3f ms plain, %.3f ms with user/mount/pid/ipc/uts "
           "namespaces: +%.3f ms\n", plain, ns, ns - plain);

    static const struct {
        const char *shape, *what;
    } shapes[] = {
        {"bare", "bare: vfork + exec of /bin/true"},
        {"fresh", "fresh namespaces + maps + /tmp + /proc per task"},
        {"fresh-vm", "the same, init cloned with CLONE_VM"},
        {"reused", "reused worker: fork + /tmp + exec per task"},
        {"reused-ns", "reused worker, own mount + ipc ns per task"},
    };
    enum { kinds = sizeof shapes / sizeof shapes[0], rounds = 3 };
    double wall[kinds][rounds], busy[kinds][rounds];
    // Interleaved rounds: the machine's speed drifts, and each shape sees the same drift.
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < kinds; k++) {
            struct measured m = measure(shapes[k].shape, n);
            wall[k][r] = m.wall_ms;
            busy[k][r] = m.busy_ms;
        }
    printf("whole tasks, %d each, %d interleaved rounds (median): ms per task\n", n, rounds);
    printf("  %-50s %8s %8s %10s\n", "shape", "wall", "busy", "busy added");
    double bare_busy = 0;
    for (int k = 0; k < kinds; k++) {
        double mw = median3(wall[k]), mb = median3(busy[k]);
        if (k == 0) bare_busy = mb;
        printf("  %-50s %8.3f %8.3f %+10.3f\n", shapes[k].what, mw, mb, mb - bare_busy);
    }
    return 0;
}
