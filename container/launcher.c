/*
 * mme-launcher: the 'python' MMS starts for each model, in C so it costs ~0.2 MB instead of the
 * ~4.5 MB of an idle Python interpreter (it lives as long as the model). Same protocol and
 * behaviour as launcher.py, which stays as the fallback where no C compiler was available:
 *
 *   - argv[1] is not MMS's model_service_worker.py: exec the real Python with the same arguments.
 *   - Otherwise connect to the zygote, send a 4-byte big-endian length and a JSON object
 *     {"argv": [...], "cwd": "...", "env": {...}, "adopt": false} with fds 0, 1, 2 attached
 *     (SCM_RIGHTS); forward signals as "S<signum>\n"; on "X<waitstatus>\n" exit the same way
 *     (re-raising the signal when the model was ended by one).
 *   - This process keeps the model's stdio for the zygote, which lets its copies go (descriptors per
 *     model bound how many models it keeps): on "F\n" send "F\n" with fds 0, 1, 2 attached again.
 *     On "Q\n" (the model is served by a shared host, whose output goes to serve's own) let them go:
 *     fds 0, 1, 2 become /dev/null, so MMS's readers of our stdout/stderr meet EOF and end (a thread
 *     and a descriptor each in Java); later registrations say "quiet": true.
 *   - The zygote went away: reconnect (it is restarted by serve) and register again with
 *     "adopt": true, so the model's socket is served again while its workers keep running.
 *     A registration that ends within 10 s of being made counts as refused: the next one waits
 *     50 ms, doubling up to 5 s, so a zygote that keeps dropping us is not met with a busy loop.
 *
 * A spare ("--spare", any further arguments only reserve room): started by our MMS plugin before any model
 * needs it (container/java SpareLaunchers), it waits on stdin for the command MMS would have run: a 4-byte
 * big-endian length, then NUL-terminated fields: the argument count, the arguments, the environment's
 * count, its entries, the working directory. It then carries on as if started with them, its
 * /proc/PID/cmdline showing them (as far as the reserved room allows). EOF first: exit quietly.
 *
 * Configuration comes from "<this executable>.conf" (written by serve): line 1 the Python
 * executable, line 2 the zygote socket path. MMS runs some helpers with an empty environment,
 * so the environment cannot be relied on for these.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile int conn_fd = -1;
static int quiet = 0;

struct buf { char *data; size_t len, cap; };

static void die(const char *msg) {
    fprintf(stderr, "launcher: %s\n", msg);
    exit(1);
}

static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) die("out of memory");
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_json_string(struct buf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\'; esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(b, esc, 6);
        } else {
            put(b, (const char *)&s[i], 1);
        }
    }
    put(b, "\"", 1);
}

static void on_signal(int sig) {
    char msg[16];
    int n = 0, v = sig;
    char digits[8];
    int d = 0;
    do { digits[d++] = (char)('0' + v % 10); v /= 10; } while (v && d < 7);
    msg[n++] = 'S';
    while (d) msg[n++] = digits[--d];
    msg[n++] = '\n';
    if (conn_fd >= 0) {
        ssize_t ignored = write(conn_fd, msg, (size_t)n);
        (void)ignored;
    }
}

static int connect_zygote(const char *path, int patience_s) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) die("zygote socket path too long");
    strcpy(addr.sun_path, path);
    struct timespec pause = {0, 50 * 1000 * 1000};
    for (int tries = patience_s * 20; ; tries--) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket() failed");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
        close(fd);
        if (tries <= 0) {
            fprintf(stderr, "launcher: cannot reach the zygote at %s: %s\n", path, strerror(errno));
            exit(1);
        }
        nanosleep(&pause, NULL);
    }
}

/* The zygote asks for the model's stdio again ("F"): send it, as at registration, attached to "F\n". */
/* One sendmsg of iov with our fds 0, 1, 2 (and `extra`, unless -1) attached (SCM_RIGHTS), retried on EINTR. */
static ssize_t send_with_fds(int fd, struct iovec *iov, size_t iovlen, int extra) {
    int fds[4] = {0, 1, 2, extra};
    size_t nfds = extra >= 0 ? 4 : 3;
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = iovlen;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    ssize_t sent;
    while ((sent = sendmsg(fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {}
    return sent;
}

static void send_stdio(int fd) {
    struct iovec iov = {"F\n", 2};
    send_with_fds(fd, &iov, 1, -1);
}

/* The value after `flag` in argv, or NULL. */
static const char *arg_after(int argc, char **argv, const char *flag) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0) return argv[i + 1];
    return NULL;
}

/*
 * The model's socket, bound and listening here before the zygote hears of the model, or -1 (not a Unix
 * socket; it cannot be bound: the zygote binds it, as for the Python launcher). With the socket already
 * listening, MMS may connect as soon as we say "MMS worker started.": its connection waits in the backlog
 * while the zygote reads the registration, instead of MMS waiting for the zygote's handshake.
 */
static int bind_model_socket(int argc, char **argv) {
    const char *type = arg_after(argc, argv, "--sock-type");
    const char *path = arg_after(argc, argv, "--sock-name");
    struct sockaddr_un addr;
    if (!type || strcmp(type, "unix") != 0 || !path || strlen(path) >= sizeof addr.sun_path) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 128) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int register_model(const char *path, int argc, char **argv, int adopt, int listener) {
    struct buf b = {0};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
    put(&b, "{\"argv\": [", 10);
    for (int i = 1; i < argc; i++) {
        if (i > 1) put(&b, ", ", 2);
        put_json_string(&b, argv[i], strlen(argv[i]));
    }
    put(&b, "], \"cwd\": ", 10);
    put_json_string(&b, cwd, strlen(cwd));
    put(&b, ", \"env\": {", 10);
    int first = 1;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        if (!first) put(&b, ", ", 2);
        first = 0;
        put_json_string(&b, *e, (size_t)(eq - *e));
        put(&b, ": ", 2);
        put_json_string(&b, eq + 1, strlen(eq + 1));
    }
    const char *tail = quiet ? (adopt ? "}, \"quiet\": true, \"adopt\": true" : "}, \"quiet\": true, \"adopt\": false")
                             : (adopt ? "}, \"adopt\": true" : "}, \"adopt\": false");
    put(&b, tail, strlen(tail));
    const char *end = listener >= 0 ? ", \"announced\": true}" : "}";
    put(&b, end, strlen(end));

    int fd = connect_zygote(path, 60);
    unsigned char header[4] = {
        (unsigned char)(b.len >> 24), (unsigned char)(b.len >> 16),
        (unsigned char)(b.len >> 8), (unsigned char)b.len};
    struct iovec iov[2] = {{header, 4}, {b.data, b.len}};
    /* A zygote that drops us mid-send is seen by the caller as an EOF: it backs off and retries. */
    ssize_t sent = send_with_fds(fd, iov, 2, listener);
    size_t total = 4 + b.len, done = sent < 0 ? total : (size_t)sent;
    while (done < total) {  /* the rest of a large environment, without the descriptors */
        const char *p = done < 4 ? (const char *)header + done : b.data + (done - 4);
        size_t n = done < 4 ? 4 - done : total - done;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            break;
        }
        done += (size_t)w;
    }
    free(b.data);
    return fd;
}

static int read_fully(int fd, char *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next NUL-terminated field of [*at, end), or NULL when the message is malformed. */
static char *field(char **at, char *end) {
    char *start = *at, *nul = memchr(start, '\0', (size_t)(end - start));
    if (!nul) return NULL;
    *at = nul + 1;
    return start;
}

static char **fields(char **at, char *end, size_t *count) {
    char *n = field(at, end);
    if (!n) die("malformed spare message");
    char *stop;
    unsigned long c = strtoul(n, &stop, 10);
    if (*stop || c > 100000) die("malformed spare message");
    char **out = calloc(c + 1, sizeof *out);
    if (!out) die("out of memory");
    for (size_t i = 0; i < c; i++)
        if (!(out[i] = field(at, end))) die("malformed spare message");
    *count = c;
    return out;
}

/* A spare waits here for its model's command (see the top of this file); returns the new argv. */
static char **await_model(int spare_argc, char **spare_argv, int *argc) {
    unsigned char header[4];
    if (read_fully(0, (char *)header, 4) < 0) exit(0);  /* let go unused: the JVM is stopping */
    size_t len = (size_t)header[0] << 24 | (size_t)header[1] << 16 | (size_t)header[2] << 8 | header[3];
    if (len > (1u << 24)) die("spare message too large");
    char *msg = malloc(len + 1);
    if (!msg) die("out of memory");
    if (read_fully(0, msg, len) < 0) exit(0);
    msg[len] = '\0';
    char *at = msg, *end = msg + len;
    size_t n, envc;
    char **argv = fields(&at, end, &n);
    char **env = fields(&at, end, &envc);
    char *cwd = field(&at, end);
    if (!cwd || n < 1 || n > INT_MAX) die("malformed spare message");
    if (chdir(cwd) != 0) {
        fprintf(stderr, "launcher: cannot enter %s: %s\n", cwd, strerror(errno));
        exit(1);
    }
    environ = env;
    /* What ps shows: the model's command in the room the spare's own arguments took. */
    char *room = spare_argv[0], *room_end = spare_argv[spare_argc - 1] + strlen(spare_argv[spare_argc - 1]);
    char *w = room;
    for (size_t i = 0; i < n && w < room_end; i++) {
        size_t l = strlen(argv[i]);
        if (l > (size_t)(room_end - w)) l = (size_t)(room_end - w);
        memcpy(w, argv[i], l);
        w += l;
        if (w < room_end) *w++ = '\0';
    }
    memset(w, '\0', (size_t)(room_end - w) + 1);
    *argc = (int)n;
    return argv;
}

static void read_conf(char *python, char *sock, size_t size) {
    char self[PATH_MAX], conf[PATH_MAX + 8];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) die("cannot find my own path");
    self[n] = '\0';
    snprintf(conf, sizeof conf, "%s.conf", self);
    FILE *f = fopen(conf, "r");
    if (!f) die("cannot read my .conf file");
    if (!fgets(python, (int)size, f) || !fgets(sock, (int)size, f)) die("incomplete .conf file");
    fclose(f);
    python[strcspn(python, "\n")] = '\0';
    sock[strcspn(sock, "\n")] = '\0';
}

int main(int argc, char **argv) {
    char python[PATH_MAX], sock[PATH_MAX];
    read_conf(python, sock, sizeof python);
    if (argc >= 2 && strcmp(argv[1], "--spare") == 0) argv = await_model(argc, argv, &argc);
    size_t l = argc > 1 ? strlen(argv[1]) : 0;
    const char *suffix = "model_service_worker.py";
    if (argc < 2 || l < strlen(suffix) || strcmp(argv[1] + l - strlen(suffix), suffix) != 0) {
        argv[0] = python;  /* MMS's other helpers (metric collector): be Python */
        execv(python, argv);
        die("cannot exec Python");
    }

    int listener = bind_model_socket(argc, argv);
    conn_fd = register_model(sock, argc, argv, 0, listener);
    if (listener >= 0) {
        /* The zygote has the socket now (as its only keeper once we close ours, so an ended model's socket
         * goes with the zygote's copy); what MMS waits for, which the zygote writes when it binds. */
        close(listener);
        char hello[128];
        int n = snprintf(hello, sizeof hello, "[PID] %d\nMMS worker started.\n", (int)getpid());
        ssize_t ignored = write(1, hello, (size_t)n);
        (void)ignored;
    }
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaction(forwarded[i], &sa, NULL);

    char line[64];
    size_t have = 0;
    int refusals = 0;
    struct timespec since;
    clock_gettime(CLOCK_MONOTONIC, &since);
    for (;;) {
        char c;
        ssize_t r = read(conn_fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {  /* zygote gone: hand the model to its successor */
            int old = conn_fd;
            conn_fd = -1;
            close(old);
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            refusals = now.tv_sec - since.tv_sec < 10 ? refusals + 1 : 0;
            if (refusals > 0) {
                long ms = refusals > 7 ? 5000 : 50L << (refusals - 1);
                if (ms > 5000) ms = 5000;
                struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
                while (nanosleep(&pause, &pause) < 0 && errno == EINTR) {}
            }
            conn_fd = register_model(sock, argc, argv, 1, -1);
            clock_gettime(CLOCK_MONOTONIC, &since);
            have = 0;
            continue;
        }
        if (c != '\n') {
            if (have < sizeof line - 1) line[have++] = c;
            continue;
        }
        line[have] = '\0';
        have = 0;
        if (line[0] == 'Q') {
            int null = open("/dev/null", O_RDWR);
            if (null >= 0) {
                quiet = 1;
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
                if (null > 2) close(null);
            }
            continue;
        }
        if (line[0] == 'F') {
            send_stdio(conn_fd);
            continue;
        }
        if (line[0] == 'X') {
            int status = atoi(line + 1);
            if (WIFSIGNALED(status)) {
                int sig = WTERMSIG(status);
                signal(sig, SIG_DFL);
                kill(getpid(), sig);
            }
            return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        }
    }
}
