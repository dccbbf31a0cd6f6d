/* Listening sockets and port files: port 0 on IPv4 and IPv6 loopback,
 * accepted connections, socket flags, bad addresses, ports in use with and
 * without SO_REUSEPORT, and the atomic port file. */
#include "common/net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/unit/tap.h"

static bool contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* Connects a blocking client to addr:port of the given family; -1 on failure. */
static int connect_to(int family, const char *addr, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &sin->sin_addr);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &sin6->sin6_addr);
        len = sizeof(*sin6);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Accepts one connection on the non-blocking listener, waiting for it with
 * poll (an event wait, not a sleep), and checks a byte gets through. */
static bool accept_and_talk(int lfd, int cfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    char c = 0;
    int afd;

    if (poll(&p, 1, 5000) != 1)
        return false;
    afd = accept(lfd, NULL, NULL);
    if (afd < 0)
        return false;
    bool good = write(cfd, "x", 1) == 1;
    if (good) {
        struct pollfd q = {.fd = afd, .events = POLLIN};
        good = poll(&q, 1, 5000) == 1 && read(afd, &c, 1) == 1 && c == 'x';
    }
    close(afd);
    return good;
}

/* ---- IPv4 --------------------------------------------------------------- */

static void test_listen_ipv4(void)
{
    char err[DM_ERRLEN] = "";
    int fd = dm_net_listen("127.0.0.1", 0, 16, false, err);
    int port, cfd, one = 0;
    socklen_t len = sizeof(one);

    ok(fd >= 0, "listen on 127.0.0.1:0 (%s)", err);
    if (fd < 0)
        return;
    port = dm_net_bound_port(fd);
    ok(port > 0 && port <= 65535, "bound port %d", port);
    ok((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "listener is non-blocking");
    ok((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "listener is close-on-exec");
    ok(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, &len) == 0 && one != 0, "SO_REUSEADDR");
    one = 1;
    len = sizeof(one);
    ok(getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, &len) == 0 && one == 0,
       "no SO_REUSEPORT unless asked");
    one = 0;
    len = sizeof(one);
    ok(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &one, &len) == 0 && one != 0, "listening");

    cfd = connect_to(AF_INET, "127.0.0.1", port);
    ok(cfd >= 0, "a client connects to the bound port");
    ok(cfd >= 0 && accept_and_talk(fd, cfd), "the connection is accepted and carries a byte");
    if (cfd >= 0)
        close(cfd);
    close(fd);

    fd = dm_net_listen("0.0.0.0", 0, 16, false, err);
    port = fd >= 0 ? dm_net_bound_port(fd) : -1;
    cfd = port > 0 ? connect_to(AF_INET, "127.0.0.1", port) : -1;
    ok(fd >= 0 && port > 0 && cfd >= 0 && accept_and_talk(fd, cfd),
       "wildcard 0.0.0.0 accepts on loopback (%s)", err);
    if (cfd >= 0)
        close(cfd);
    if (fd >= 0)
        close(fd);
}

/* ---- IPv6 --------------------------------------------------------------- */

static bool ipv6_loopback_available(void)
{
    struct sockaddr_in6 sin6;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool yes;

    if (fd < 0)
        return false;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    yes = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
    close(fd);
    return yes;
}

static void test_listen_ipv6(void)
{
    char err[DM_ERRLEN] = "";

    if (!ipv6_loopback_available()) {
        ok(1, "listen on [::1]:0 # skip IPv6 loopback not available");
        ok(1, "IPv6 connection accepted # skip IPv6 loopback not available");
        return;
    }
    int fd = dm_net_listen("::1", 0, 16, false, err);
    int port = fd >= 0 ? dm_net_bound_port(fd) : -1;
    ok(fd >= 0 && port > 0, "listen on [::1]:0 -> port %d (%s)", port, err);
    int cfd = port > 0 ? connect_to(AF_INET6, "::1", port) : -1;
    ok(cfd >= 0 && accept_and_talk(fd, cfd), "IPv6 connection accepted");
    if (cfd >= 0)
        close(cfd);
    if (fd >= 0)
        close(fd);
}

/* ---- errors ------------------------------------------------------------- */

static void test_bad_hosts(void)
{
    static const char *const hosts[] = {"not-an-ip", "localhost",    "256.0.0.1", "1.2.3",
                                        "::1::",     "127.0.0.1:80", ""};
    for (size_t i = 0; i < DM_ARRAY_LEN(hosts); i++) {
        char err[DM_ERRLEN] = "";
        int fd = dm_net_listen(hosts[i], 0, 16, false, err);
        ok(fd == -1 && err[0] != '\0' && contains(err, hosts[i]), "bad host \"%s\" refused: %s",
           hosts[i], err);
        if (fd >= 0)
            close(fd);
    }
    char err[DM_ERRLEN] = "";
    int fd = dm_net_listen("127.0.0.1", 70000, 16, false, err);
    ok(fd == -1 && err[0] != '\0', "port 70000 refused: %s", err);
    if (fd >= 0)
        close(fd);
}

static void test_port_in_use(void)
{
    char err[DM_ERRLEN] = "", want[64];
    int a = dm_net_listen("127.0.0.1", 0, 16, false, err);
    int port = a >= 0 ? dm_net_bound_port(a) : -1;

    ok(a >= 0 && port > 0, "first listener on port %d", port);
    if (a < 0)
        return;
    int b = dm_net_listen("127.0.0.1", port, 16, false, err);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    ok(b == -1 && contains(err, want) && contains(err, strerror(EADDRINUSE)),
       "second bind without SO_REUSEPORT fails naming the address: %s", err);
    if (b >= 0)
        close(b);
    b = dm_net_listen("127.0.0.1", port, 16, true, err);
    ok(b == -1, "SO_REUSEPORT on the second alone is not enough");
    if (b >= 0)
        close(b);
    close(a);

    /* With SO_REUSEPORT on both, the workers share the port (STYLE §14). */
    a = dm_net_listen("127.0.0.1", 0, 16, true, err);
    port = a >= 0 ? dm_net_bound_port(a) : -1;
    b = port > 0 ? dm_net_listen("127.0.0.1", port, 16, true, err) : -1;
    ok(a >= 0 && b >= 0 && dm_net_bound_port(b) == port,
       "two SO_REUSEPORT listeners share port %d (%s)", port, b >= 0 ? "" : err);
    int one = 0;
    socklen_t len = sizeof(one);
    ok(a >= 0 && getsockopt(a, SOL_SOCKET, SO_REUSEPORT, &one, &len) == 0 && one != 0,
       "SO_REUSEPORT set when asked");
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
}

static void test_bound_port(void)
{
    int p[2];

    ok(dm_net_bound_port(-1) == -1, "bound port of -1 is -1");
    if (pipe(p) == 0) {
        ok(dm_net_bound_port(p[0]) == -1, "bound port of a pipe is -1");
        close(p[0]);
        close(p[1]);
    } else {
        ok(0, "pipe: %s", strerror(errno));
    }
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    ok(u >= 0 && dm_net_bound_port(u) == -1, "bound port of a unix socket is -1");
    if (u >= 0)
        close(u);
}

/* ---- port file ---------------------------------------------------------- */

static bool read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return false;
    n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return true;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_port_file(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600], tmpname[640], buf[64], err[DM_ERRLEN] = "";

    snprintf(dir, sizeof(dir), "%s/dm-test-net.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    snprintf(path, sizeof(path), "%s/port", dir);
    snprintf(tmpname, sizeof(tmpname), "%s.tmp", path);

    ok(dm_net_write_port_file(path, 43210, err) == 0, "port file written (%s)", err);
    ok(read_file(path, buf, sizeof(buf)) && strcmp(buf, "43210\n") == 0,
       "contents are exactly \"PORT\\n\"");
    ok(!exists(tmpname), "no .tmp left behind");

    ok(dm_net_write_port_file(path, 7, err) == 0 && read_file(path, buf, sizeof(buf)) &&
           strcmp(buf, "7\n") == 0,
       "rewriting replaces the contents");
    ok(dm_net_write_port_file(path, 0, err) == 0 && read_file(path, buf, sizeof(buf)) &&
           strcmp(buf, "0\n") == 0,
       "port 0");

    char missing[700];
    snprintf(missing, sizeof(missing), "%s/no-such-dir/port", dir);
    err[0] = '\0';
    ok(dm_net_write_port_file(missing, 1, err) == -1 && contains(err, missing) &&
           contains(err, strerror(ENOENT)),
       "missing directory: %s", err);

    /* A directory where the file should go: the temp file can be made but
     * not renamed over it, and must not stay behind. */
    char isdir[700], isdir_tmp[720];
    snprintf(isdir, sizeof(isdir), "%s/adir", dir);
    snprintf(isdir_tmp, sizeof(isdir_tmp), "%s.tmp", isdir);
    mkdir(isdir, 0700);
    err[0] = '\0';
    ok(dm_net_write_port_file(isdir, 1, err) == -1 && contains(err, isdir),
       "path is a directory: %s", err);
    ok(!exists(isdir_tmp), "no .tmp left behind after a failed rename");

    if (geteuid() != 0) {
        char ro[700], ro_file[720];
        snprintf(ro, sizeof(ro), "%s/ro", dir);
        snprintf(ro_file, sizeof(ro_file), "%s/port", ro);
        mkdir(ro, 0500);
        err[0] = '\0';
        ok(dm_net_write_port_file(ro_file, 1, err) == -1 && contains(err, ro_file) &&
               contains(err, strerror(EACCES)),
           "unwritable directory: %s", err);
        rmdir(ro);
    } else {
        ok(1, "unwritable directory # skip running as root");
    }

    unlink(isdir_tmp);
    rmdir(isdir);
    unlink(tmpname);
    unlink(path);
    ok(rmdir(dir) == 0, "temporary directory left clean");
}

int main(void)
{
    subtest("IPv4", test_listen_ipv4);
    subtest("IPv6", test_listen_ipv6);
    subtest("bad hosts", test_bad_hosts);
    subtest("port in use", test_port_in_use);
    subtest("dm_net_bound_port", test_bound_port);
    subtest("port file", test_port_file);
    return done_testing();
}
