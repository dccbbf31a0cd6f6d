svc_free_ports() {
    if [[ ! -f /tmp/svcfail/used ]]; then touch /tmp/svcfail/used; if [[ $1 == 2 ]]; then echo "38721 1"; else echo 38721; fi; return; fi
    python3 -c 'import socket;ss=[socket.socket() for _ in range(int($1))];[s.bind(("127.0.0.1",0)) for s in ss];print(" ".join(str(s.getsockname()[1]) for s in ss))'
}
