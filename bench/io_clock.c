/* bench/scale.py's clock on a process's reads and writes, for the store's share of a fan-out.
 *
 * Preloaded into node 0's process (LD_PRELOAD), it notes the time, thread, size and first
 * bytes of every read() and write() into a file mapped shared (IO_CLOCK_FILE), which the
 * bench reads while the process runs. A note costs a vDSO clock read and a copy: strace
 * stopped the thread at every call instead, and tripled what it measured. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEAD 8
#define SLOTS (1 << 20)

struct note { double t; int tid; int op; long len; char head[HEAD]; };
struct book { _Atomic long next; long slots; struct note notes[]; };

static struct book *book;
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static __thread int my_tid;

__attribute__((constructor)) static void open_book(void) {
    real_read = dlsym(RTLD_NEXT, "read");
    real_write = dlsym(RTLD_NEXT, "write");
    const char *path = getenv("IO_CLOCK_FILE");
    if (!path) return;
    size_t size = sizeof(struct book) + SLOTS * sizeof(struct note);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) return;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return;
    book = map;
    book->slots = SLOTS;
}

static void note(int op, const void *buf, ssize_t len) {
    if (!book || len <= 0) return;
    long i = atomic_fetch_add(&book->next, 1);
    if (i >= SLOTS) return;
    struct note *n = &book->notes[i];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (!my_tid) my_tid = (int)syscall(SYS_gettid);
    n->t = ts.tv_sec + ts.tv_nsec * 1e-9;
    n->tid = my_tid;
    n->op = op;
    n->len = len;
    memcpy(n->head, buf, len < HEAD ? (size_t)len : HEAD);
}

ssize_t read(int fd, void *buf, size_t count) {
    ssize_t got = real_read(fd, buf, count);
    note('r', buf, got);
    return got;
}

ssize_t write(int fd, const void *buf, size_t count) {
    ssize_t put = real_write(fd, buf, count);
    note('w', buf, put);
    return put;
}
