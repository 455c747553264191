#!/bin/bash
# NBD sources over TLS, against nbdkit with --tls=require:
#  - PSK on a unix socket: the right key gives views identical to the
#    source; a wrong key, an unknown username and no TLS at all each fail at
#    start-up with exit status 3 and one error line naming the server;
#  - X.509 on TCP loopback (a CA and a server certificate for "localhost"
#    made here with openssl): the CA's directory gives identical views; a
#    directory with another CA fails naming the server.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit qemu-img openssl python3

src=$(fixture random)

# --- PSK
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/server.psk"
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/wrong.psk"
start_nbdkit "$T/tls.sock" -r --tls=require --tls-psk="$T/server.psk" file "$src"
psk_uri() { # USER PSKFILE
    echo "nbds+unix://$1@/?socket=$T/tls.sock&tls-psk-file=$2"
}

start_daemon "$T/mnt" --source psk="$(psk_uri alice "$T/server.psk")"
cmp "$src" "$T/mnt/psk/disk.raw" || fail "disk.raw over TLS-PSK differs from the source"
assert_views_identical "$src" "$T/mnt/psk"
stop_daemon

uri=$(psk_uri alice "$T/wrong.psk")
run_daemon_fg --mount "$T/mnt" --source psk="$uri"
expect_startup_error 3 "source 'psk': NBD server $uri: " "a wrong PSK"
assert_file_has_text "$T/run.err" "pre-shared key" "a wrong PSK: the hint"

uri=$(psk_uri bob "$T/server.psk")
run_daemon_fg --mount "$T/mnt" --source psk="$uri"
expect_startup_error 3 "NBD server $uri: " "an unknown PSK username"
assert_file_has_text "$T/run.err" "username bob was not found" "an unknown PSK username"

uri=$(nbd_unix_uri "$T/tls.sock")
run_daemon_fg --mount "$T/mnt" --source psk="$uri"
expect_startup_error 3 "NBD server $uri: " "no TLS to a server that requires it"
assert_file_has_text "$T/run.err" "requires TLS" "no TLS to a server that requires it"

# --- X.509
make_ca() { # DIR CN
    mkdir -p "$1"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem" \
        -days 30 -subj "/CN=$2" 2>/dev/null
}
make_ca "$T/pki" "p2vfs test CA"
make_ca "$T/other" "another CA"
openssl req -newkey rsa:2048 -nodes -keyout "$T/pki/server-key.pem" -out "$T/pki/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$T/pki/ext"
openssl x509 -req -in "$T/pki/server.csr" -CA "$T/pki/ca-cert.pem" -CAkey "$T/pki/ca-key.pem" \
    -CAcreateserial -out "$T/pki/server-cert.pem" -days 30 -extfile "$T/pki/ext" 2>/dev/null
mkdir "$T/client" "$T/client-other"
cp "$T/pki/ca-cert.pem" "$T/client/"
cp "$T/other/ca-cert.pem" "$T/client-other/"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bg_tracked nbdkit -f -r -i 127.0.0.1 -p "$port" --tls=require --tls-certificates="$T/pki" file "$src"
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || fail "nbdkit is not listening on port $port"

start_daemon "$T/mnt" --source x509="nbds://localhost:$port/?tls-certificates=$T/client"
cmp "$src" "$T/mnt/x509/disk.raw" || fail "disk.raw over TLS with X.509 differs from the source"
run_rc qemu-img compare -f raw -F vmdk "$src" "$T/mnt/x509/disk.vmdk"
assert_eq "Images are identical." "$(cat "$T/run.out")" "disk.vmdk over TLS with X.509"
stop_daemon

uri="nbds://localhost:$port/?tls-certificates=$T/client-other"
run_daemon_fg --mount "$T/mnt" --source x509="$uri"
expect_startup_error 3 "NBD server $uri: " "a server certificate from another CA"
