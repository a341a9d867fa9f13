/*
 * imgbuild's shell-less release launcher.
 *
 * Why C and not Rust: the launcher runs inside images of both architectures (amd64 and arm64) and
 * must be carried by imgbuild for both; the project's toolchain builds Rust for x86_64 only, while
 * Debian's gcc and gcc-aarch64-linux-gnu build this one freestanding file for both. It links no
 * libc (a few raw system calls), so the same bytes run on any Linux base: glibc, musl or none.
 * `scripts/build-launcher` builds the two binaries committed beside it (src/launch/bin/); an e2e
 * test rebuilds them and fails when they differ from this source.
 *
 * What it does: imgbuild writes a plan into the `plan` array of a copy of this binary (see
 * src/launch/plan.rs for the format). The plan says, per command (start, eval, remote, ...), what
 * `bin/RELEASE COMMAND` would export and what it would finally exec: the launcher sets that
 * environment, builds that argument list and execs ERTS's erlexec, as the release's shell scripts
 * do, but with no shell.
 */

typedef unsigned long usize;
typedef long isize;

#define PLAN_MAX 32768
#define HEAP_MAX (1 << 20)
#define MAX_ENV 4096
#define MAX_ARGS 2048

/* Overwritten by imgbuild (found by its leading marker). Not const, not static: the compiler must
 * read it from the file's data, never fold it. */
__attribute__((used, aligned(16))) unsigned char plan[PLAN_MAX] = "IMGBUILD-LAUNCH-PLAN-1";

static char heap[HEAP_MAX];
static usize heap_used;
static char *envs[MAX_ENV + 1];
static usize nenv;
static char *args[MAX_ARGS + 1];
static usize nargs;
static int uargc;
static char **uargv;

/* ---------- system calls ---------- */

#if defined(__x86_64__)
#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_ioctl 16
#define SYS_execve 59
#define SYS_exit_group 231
#define SYS_openat 257
#define SYS_mkdirat 258
#define SYS_clock_gettime 228
#define SYS_getrandom 318
#define SYS_clone 56
#define SYS_wait4 61
#define SYS_chdir 80
static isize sys6(isize n, isize a, isize b, isize c, isize d) {
    isize ret;
    register isize r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call cmain\n"
        "  hlt\n");
#elif defined(__aarch64__)
#define SYS_read 63
#define SYS_write 64
#define SYS_close 57
#define SYS_ioctl 29
#define SYS_execve 221
#define SYS_exit_group 94
#define SYS_openat 56
#define SYS_mkdirat 34
#define SYS_clock_gettime 113
#define SYS_getrandom 278
#define SYS_clone 220
#define SYS_wait4 260
#define SYS_chdir 49
static isize sys6(isize n, isize a, isize b, isize c, isize d) {
    register isize x8 __asm__("x8") = n;
    register isize x0 __asm__("x0") = a;
    register isize x1 __asm__("x1") = b;
    register isize x2 __asm__("x2") = c;
    register isize x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  and sp, x0, #-16\n"
        "  bl cmain\n"
        "  brk #0\n");
#else
#error "the launcher is built for x86_64 and aarch64"
#endif

#define AT_FDCWD (-100)
#define O_RDONLY 0
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_CLOEXEC 02000000
#define EEXIST 17
#define EINTR 4

static void die_code(int code) {
    sys6(SYS_exit_group, code, 0, 0, 0);
    for (;;) {
    }
}

/* The compiler may emit calls to these for struct copies and loops. */
void *memcpy(void *d, const void *s, usize n) {
    char *dd = d;
    const char *ss = s;
    while (n--) *dd++ = *ss++;
    return d;
}
void *memset(void *d, int c, usize n) {
    char *dd = d;
    while (n--) *dd++ = (char)c;
    return d;
}

static usize slen(const char *s) {
    usize n = 0;
    while (s[n]) n++;
    return n;
}

static void write_all(int fd, const char *s, usize n) {
    while (n > 0) {
        isize w = sys6(SYS_write, fd, (isize)s, (isize)n, 0);
        if (w == -EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (usize)w;
    }
}

static void err(const char *s) { write_all(2, s, slen(s)); }

static void fail(const char *a, const char *b) {
    err("imgbuild launcher: ");
    err(a);
    if (b) err(b);
    err("\n");
    die_code(1);
}

/* ---------- a bump allocator for strings ---------- */

static char *cur;      /* the string being built */
static usize cur_len;

static void begin(void) {
    cur = heap + heap_used;
    cur_len = 0;
}
static void put(const char *s, usize n) {
    if (heap_used + cur_len + n + 1 > HEAP_MAX) fail("out of memory building the command line", 0);
    memcpy(cur + cur_len, s, n);
    cur_len += n;
}
static char *finish(void) {
    cur[cur_len] = 0;
    heap_used += cur_len + 1;
    return cur;
}

/* ---------- environment ---------- */

/* The value of NAME (n bytes) in the environment, or 0 when unset. */
static const char *getenv_n(const char *name, usize n) {
    for (usize i = 0; i < nenv; i++) {
        const char *e = envs[i];
        usize j = 0;
        while (j < n && e[j] && e[j] == name[j]) j++;
        if (j == n && e[j] == '=') return e + n + 1;
    }
    return 0;
}

static void setenv_n(const char *name, usize n, const char *value) {
    begin();
    put(name, n);
    put("=", 1);
    put(value, slen(value));
    char *entry = finish();
    for (usize i = 0; i < nenv; i++) {
        const char *e = envs[i];
        usize j = 0;
        while (j < n && e[j] && e[j] == name[j]) j++;
        if (j == n && e[j] == '=') {
            envs[i] = entry;
            return;
        }
    }
    if (nenv >= MAX_ENV) fail("too many environment variables", 0);
    envs[nenv++] = entry;
}

static int empty_env(const char *name, usize n) {
    const char *v = getenv_n(name, n);
    return v == 0 || v[0] == 0;
}

/* ---------- the plan ---------- */

static const unsigned char *pc;
static const unsigned char *plan_end;

static unsigned u16(void) {
    if (pc + 2 > plan_end) fail("the plan is truncated", 0);
    unsigned v = (unsigned)pc[0] | ((unsigned)pc[1] << 8);
    pc += 2;
    return v;
}
static unsigned u8(void) {
    if (pc + 1 > plan_end) fail("the plan is truncated", 0);
    return *pc++;
}
/* A length-prefixed string of the plan: pointer and length. */
static const char *str(usize *n) {
    *n = u16();
    if (pc + *n > plan_end) fail("the plan is truncated", 0);
    const char *s = (const char *)pc;
    pc += *n;
    return s;
}

static const char hex[] = "0123456789abcdef";

static void put_random(void) {
    unsigned char b[2] = {0, 0};
    isize r;
    do {
        r = sys6(SYS_getrandom, (isize)b, 2, 0, 0);
    } while (r == -EINTR);
    /* od -x prints the 16-bit word in host order: low byte last on little-endian. */
    unsigned w = (unsigned)b[0] | ((unsigned)b[1] << 8);
    char out[4] = {hex[(w >> 12) & 15], hex[(w >> 8) & 15], hex[(w >> 4) & 15], hex[w & 15]};
    put(out, 4);
}

static void put_num(unsigned long v, int width) {
    char b[20];
    for (int i = width - 1; i >= 0; i--) {
        b[i] = (char)('0' + v % 10);
        v /= 10;
    }
    put(b, (usize)width);
}

/* `date +%Y%m%d%H%M%S` in UTC (the images set no TZ). */
static void put_datetime(void) {
    struct {
        long sec;
        long nsec;
    } ts = {0, 0};
    sys6(SYS_clock_gettime, 0, (isize)&ts, 0, 0);
    long days = ts.sec / 86400, rem = ts.sec % 86400;
    /* civil_from_days (Howard Hinnant's algorithm) */
    long z = days + 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long y = yoe + era * 400;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    long d = doy - (153 * mp + 2) / 5 + 1;
    long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    put_num((unsigned long)y, 4);
    put_num((unsigned long)m, 2);
    put_num((unsigned long)d, 2);
    put_num((unsigned long)(rem / 3600), 2);
    put_num((unsigned long)(rem / 60 % 60), 2);
    put_num((unsigned long)(rem % 60), 2);
}

/* Expand a template into the string being built: bytes as they are, 0x01 NAME 0x02 the value of
 * an environment variable (empty when unset), 0x03 four random hex digits, 0x04 the date. */
static void expand_into(const char *t, usize n) {
    usize i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)t[i];
        if (c == 1) {
            usize j = i + 1;
            while (j < n && t[j] != 2) j++;
            const char *v = getenv_n(t + i + 1, j - i - 1);
            if (v) put(v, slen(v));
            i = j + 1;
        } else if (c == 3) {
            put_random();
            i++;
        } else if (c == 4) {
            put_datetime();
            i++;
        } else {
            usize j = i;
            while (j < n && (unsigned char)t[j] > 4) j++;
            put(t + i, j - i);
            i = j;
        }
    }
}

static char *expand(const char *t, usize n) {
    begin();
    expand_into(t, n);
    return finish();
}

static void add_arg(char *a) {
    if (nargs >= MAX_ARGS) fail("too many arguments", 0);
    args[nargs++] = a;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

/* Word splitting as the shell does for an unquoted expansion (IFS is space, tab, newline). */
static void add_split(const char *t, usize n) {
    char *s = expand(t, n);
    while (*s) {
        while (is_space(*s)) s++;
        if (!*s) break;
        char *w = s;
        while (*s && !is_space(*s)) s++;
        if (*s) *s++ = 0;
        add_arg(w);
    }
}

static int open_read(const char *path) {
    return (int)sys6(SYS_openat, AT_FDCWD, (isize)path, O_RDONLY | O_CLOEXEC, 0);
}

/* `$(cat FILE)`: the file without its trailing newlines, or 0 when it cannot be read. */
static char *read_file(const char *path) {
    int fd = open_read(path);
    if (fd < 0) return 0;
    begin();
    char buf[4096];
    for (;;) {
        isize r = sys6(SYS_read, fd, (isize)buf, sizeof buf, 0);
        if (r == -EINTR) continue;
        if (r <= 0) break;
        put(buf, (usize)r);
    }
    sys6(SYS_close, fd, 0, 0, 0);
    while (cur_len > 0 && cur[cur_len - 1] == '\n') cur_len--;
    return finish();
}

static int contains_marker(const char *path) {
    static const char marker[] = "RUNTIME_CONFIG=true";
    const usize m = sizeof marker - 1;
    int fd = open_read(path);
    if (fd < 0) return 0;
    char buf[65536 + sizeof marker];
    usize keep = 0;
    int found = 0;
    for (;;) {
        isize r = sys6(SYS_read, fd, (isize)(buf + keep), 65536, 0);
        if (r == -EINTR) continue;
        if (r <= 0) break;
        usize n = keep + (usize)r;
        for (usize i = 0; i + m <= n && !found; i++) {
            usize j = 0;
            while (j < m && buf[i + j] == marker[j]) j++;
            if (j == m) found = 1;
        }
        if (found) break;
        keep = n < m - 1 ? n : m - 1;
        memcpy(buf, buf + n - keep, keep);
    }
    sys6(SYS_close, fd, 0, 0, 0);
    return found;
}

/* mkdir -p */
static int mkdirs(char *path) {
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            isize r = sys6(SYS_mkdirat, AT_FDCWD, (isize)path, 0777, 0);
            *p = c;
            if (r < 0 && r != -EEXIST) return -1;
            if (!c) return 0;
        }
    }
}

static int copy_file(const char *from, const char *to) {
    int in = open_read(from);
    if (in < 0) return -1;
    int out = (int)sys6(SYS_openat, AT_FDCWD, (isize)to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (out < 0) {
        sys6(SYS_close, in, 0, 0, 0);
        return -1;
    }
    char buf[65536];
    int rc = 0;
    for (;;) {
        isize r = sys6(SYS_read, in, (isize)buf, sizeof buf, 0);
        if (r == -EINTR) continue;
        if (r < 0) rc = -1;
        if (r <= 0) break;
        const char *p = buf;
        usize left = (usize)r;
        while (left > 0) {
            isize w = sys6(SYS_write, out, (isize)p, (isize)left, 0);
            if (w == -EINTR) continue;
            if (w <= 0) {
                rc = -1;
                break;
            }
            p += w;
            left -= (usize)w;
        }
        if (rc) break;
    }
    sys6(SYS_close, in, 0, 0, 0);
    if (sys6(SYS_close, out, 0, 0, 0) < 0) rc = -1;
    return rc;
}

static int isatty(int fd) {
    char termios[64];
    return sys6(SYS_ioctl, fd, 0x5401 /* TCGETS */, (isize)termios, 0) == 0;
}

static int streq_n(const char *a, const char *b, usize n) {
    for (usize i = 0; i < n; i++)
        if (a[i] != b[i] || a[i] == 0) return 0;
    return b[n] == 0;
}

enum {
    OP_SETENV = 0x10,
    OP_DEFENV = 0x11,
    OP_DEFENV_FILE = 0x12,
    OP_ARG = 0x20,
    OP_SPLIT = 0x21,
    OP_USERARG = 0x22,
    OP_USERREST = 0x23,
    OP_IFEQ = 0x30,
    OP_IFTTY = 0x31,
    OP_IFEMPTY = 0x32,
    OP_JMP = 0x33,
    OP_IFARG = 0x34,
    OP_FAIL = 0x40,
    OP_PRINT = 0x41,
    OP_SYSCONF = 0x50,
    OP_EXEC = 0x60,
    OP_DAEMON = 0x61,
    OP_CHDIR = 0x62,
};

/* Run `PATH -daemon` and wait for it to return (it detaches itself): what erlexec does for epmd
 * through system(3), which needs /bin/sh. */
static void run_daemon(char *path) {
    char *argv[3] = {path, "-daemon", 0};
    envs[nenv] = 0;
    isize pid = sys6(SYS_clone, 17 /* SIGCHLD */, 0, 0, 0);
    if (pid == 0) {
        sys6(SYS_execve, (isize)path, (isize)argv, (isize)envs, 0);
        die_code(127);
    }
    if (pid < 0) return;
    int status = 0;
    while (sys6(SYS_wait4, pid, (isize)&status, 0, 0) == -EINTR) {
    }
}

static void skip(unsigned n) {
    if (pc + n > plan_end) fail("the plan is truncated", 0);
    pc += n;
}

static void run(const unsigned char *block, usize len) {
    pc = block;
    plan_end = block + len;
    while (pc < plan_end) {
        unsigned op = u8();
        usize n1, n2, n3;
        const char *a, *b, *c;
        switch (op) {
        case OP_SETENV:
            a = str(&n1);
            b = str(&n2);
            setenv_n(a, n1, expand(b, n2));
            break;
        case OP_DEFENV:
            a = str(&n1);
            b = str(&n2);
            if (empty_env(a, n1)) setenv_n(a, n1, expand(b, n2));
            break;
        case OP_DEFENV_FILE: {
            a = str(&n1);
            b = str(&n2);
            if (empty_env(a, n1)) {
                char *path = expand(b, n2);
                char *v = read_file(path);
                if (!v) fail("cannot read ", path);
                setenv_n(a, n1, v);
            }
            break;
        }
        case OP_ARG:
            a = str(&n1);
            add_arg(expand(a, n1));
            break;
        case OP_SPLIT:
            a = str(&n1);
            add_split(a, n1);
            break;
        case OP_USERARG: {
            unsigned i = u8();
            if ((int)i < uargc) add_arg(uargv[i]);
            break;
        }
        case OP_USERREST: {
            unsigned i = u8();
            for (int k = (int)i; k < uargc; k++) add_arg(uargv[k]);
            break;
        }
        case OP_IFEQ: {
            a = str(&n1);
            b = str(&n2);
            unsigned off = u16();
            const char *v = getenv_n(a, n1);
            if (!(v && streq_n(b, v, n2))) skip(off);
            break;
        }
        case OP_IFTTY: {
            unsigned off = u16();
            if (!(isatty(1) && isatty(2))) skip(off);
            break;
        }
        case OP_IFEMPTY: {
            a = str(&n1);
            unsigned off = u16();
            if (!empty_env(a, n1)) skip(off);
            break;
        }
        case OP_JMP:
            skip(u16());
            break;
        case OP_IFARG: {
            unsigned i = u8();
            unsigned off = u16();
            if (!((int)i < uargc && uargv[i][0])) skip(off);
            break;
        }
        case OP_FAIL:
            a = str(&n1);
            begin();
            expand_into(a, n1);
            put("\n", 1);
            write_all(2, cur, cur_len);
            die_code(1);
            break;
        case OP_PRINT:
            a = str(&n1);
            begin();
            expand_into(a, n1);
            put("\n", 1);
            write_all(1, cur, cur_len);
            die_code(0);
            break;
        case OP_SYSCONF: {
            /* export_release_sys_config: the runtime configuration is written to a copy in
             * RELEASE_TMP, so the original stays as the release shipped it. */
            a = str(&n1); /* the default, when RELEASE_SYS_CONFIG is empty */
            b = str(&n2); /* the copy's name, without .config */
            c = str(&n3); /* the directory to create */
            const char *set = getenv_n("RELEASE_SYS_CONFIG", 18);
            char *base = (set && set[0]) ? (char *)set : expand(a, n1);
            begin();
            put(base, slen(base));
            put(".config", 7);
            char *base_file = finish();
            if (contains_marker(base_file)) {
                char *copy = expand(b, n2);
                begin();
                put(copy, slen(copy));
                put(".config", 7);
                char *copy_file_name = finish();
                char *dir = expand(c, n3);
                if (mkdirs(dir) < 0 || copy_file(base_file, copy_file_name) < 0) {
                    err("ERROR: Cannot start release because it could not write ");
                    err(copy_file_name);
                    err("\n");
                    die_code(1);
                }
                setenv_n("RELEASE_SYS_CONFIG", 18, copy);
            } else {
                setenv_n("RELEASE_SYS_CONFIG", 18, base);
            }
            break;
        }
        case OP_DAEMON:
            a = str(&n1);
            run_daemon(expand(a, n1));
            break;
        case OP_CHDIR:
            a = str(&n1);
            if (sys6(SYS_chdir, (isize)expand(a, n1), 0, 0, 0) < 0) fail("cannot change to the directory ", expand(a, n1));
            break;
        case OP_EXEC: {
            a = str(&n1);
            char *path = expand(a, n1);
            args[nargs] = 0;
            envs[nenv] = 0;
            isize r = sys6(SYS_execve, (isize)path, (isize)args, (isize)envs, 0);
            begin();
            put("cannot execute ", 15);
            put(path, slen(path));
            put(" (errno ", 8);
            put_num((unsigned long)(-r), r <= -100 ? 3 : (r <= -10 ? 2 : 1));
            put(")", 1);
            fail(finish(), 0);
            break;
        }
        default:
            fail("the plan has an unknown instruction", 0);
        }
    }
    fail("the plan ends without an exec", 0);
}

static void usage_and_exit(const unsigned char *cmds, const unsigned char *end, const char *bad) {
    err("Usage: ");
    const char *prog = uargv[0];
    for (const char *q = uargv[0]; *q; q++)
        if (*q == '/') prog = q + 1;
    err(prog);
    err(" COMMAND [ARGS]\n\nThe known commands are:\n");
    const unsigned char *p = cmds;
    while (p + 2 <= end) {
        unsigned n = (unsigned)p[0] | ((unsigned)p[1] << 8);
        if (n == 0) break;
        err("    ");
        write_all(2, (const char *)p + 2, n);
        err("\n");
        p += 2 + n;
        unsigned len = (unsigned)p[0] | ((unsigned)p[1] << 8);
        p += 2 + len;
    }
    if (bad) {
        err("ERROR: Unknown command ");
        err(bad);
        err("\n");
    }
    die_code(1);
}

/* Layout of the plan: the marker (22 bytes), a NUL, u16 total length, then str(default command)
 * and a list of commands, each str(name) u16(len) block[len], ended by a zero u16. */
__attribute__((used)) void cmain(long *sp) {
    uargc = (int)sp[0];
    uargv = (char **)(sp + 1);
    char **envp = uargv + uargc + 1;
    for (; *envp; envp++) {
        if (nenv >= MAX_ENV) fail("too many environment variables", 0);
        envs[nenv++] = *envp;
    }
    /* The marker is not compared here: a second copy of it in the binary would confuse imgbuild's
     * search for the plan. An unwritten plan has a zero length. */
    const unsigned char *p = plan + sizeof "IMGBUILD-LAUNCH-PLAN-1";
    unsigned total = (unsigned)p[0] | ((unsigned)p[1] << 8);
    p += 2;
    const unsigned char *end = p + total;
    if (total == 0 || end > plan + PLAN_MAX) fail("this launcher carries no plan", 0);
    unsigned dn = (unsigned)p[0] | ((unsigned)p[1] << 8);
    const char *def = (const char *)p + 2;
    p += 2 + dn;
    const char *want;
    usize want_n;
    if (uargc < 2) {
        want = def;
        want_n = dn;
    } else {
        want = uargv[1];
        want_n = slen(uargv[1]);
    }
    const unsigned char *cmds = p;
    while (p + 2 <= end) {
        unsigned n = (unsigned)p[0] | ((unsigned)p[1] << 8);
        if (n == 0) break;
        const char *name = (const char *)p + 2;
        p += 2 + n;
        unsigned len = (unsigned)p[0] | ((unsigned)p[1] << 8);
        p += 2;
        if (n == want_n) {
            usize k = 0;
            while (k < n && name[k] == want[k]) k++;
            if (k == n) {
                if (uargc < 2) {
                    /* No command given: behave as `bin/RELEASE DEFAULT`. */
                    static char *defargv[3];
                    begin();
                    put(def, dn);
                    defargv[0] = uargv[0];
                    defargv[1] = finish();
                    defargv[2] = 0;
                    uargv = defargv;
                    uargc = 2;
                }
                run(p, len);
            }
        }
        p += len;
    }
    usage_and_exit(cmds, end, uargc >= 2 ? uargv[1] : 0);
}
