/* Listening sockets and port files. */
#include "common/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

int dm_net_listen(const char *host, int port, int backlog, bool reuseport, char err[DM_ERRLEN])
{
    struct addrinfo hints, *res = NULL;
    char service[16];
    int fd = -1, one = 1, rc, e;

    /* getaddrinfo() takes the service modulo 65536 (70000 binds 4464):
     * refuse what is not a port instead of listening somewhere else. */
    if (port < 0 || port > 65535) {
        snprintf(err, DM_ERRLEN, "listen on %s:%d: port out of range 0..65535", host, port);
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%d", port);
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, DM_ERRLEN, "listen address %s: %s (a numeric address is expected)", host,
                 gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0)
        goto fail;
    freeaddrinfo(res);
    return fd;

fail:
    e = errno;
    snprintf(err, DM_ERRLEN, "listen on %s:%d: %s", host, port, strerror(e));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

int dm_net_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

int dm_net_write_port_file(const char *path, int port, char err[DM_ERRLEN])
{
    char tmp[4096];
    FILE *f;
    int e;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL) {
        e = errno;
        goto fail;
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        e = errno;
        unlink(tmp); /* a failed write or rename must not leave the temp file behind */
        goto fail;
    }
    return 0;
fail:
    snprintf(err, DM_ERRLEN, "port file %s: %s", path, strerror(e));
    return -1;
}
