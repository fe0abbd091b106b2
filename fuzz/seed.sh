#!/usr/bin/env bash
# Regenerates the seed inputs of fuzz/corpus/<target>/ from the torture corpora in
# testdata/ (RFC 4475, RFC 5118 as archived with bare LF, and RFC 5118 wire/ with
# CRLF), plus the RFC examples of digest header values written out below.
#
#   fuzz/seed.sh           add the seeds to fuzz/corpus/ (existing files are kept)
#   fuzz/seed.sh --reset   delete fuzz/corpus/ first (except regress-* files), then seed
#
# Every file is named by the SHA-1 of its contents, as libFuzzer and `cargo fuzz cmin`
# name theirs, so running this again after a minimization adds nothing twice.
# Needs bash, perl and sha1sum; downloads nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
corpus="$root/fuzz/corpus"
testdata="$root/testdata"

if [[ "${1:-}" == "--reset" ]]; then
    # Keep the hand-named reproducers of fixed findings (regress-*).
    [[ -d "$corpus" ]] && find "$corpus" -type f ! -name 'regress-*' -delete
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--reset]" >&2
    exit 2
fi

for target in datagram stream uri digest roundtrip; do
    mkdir -p "$corpus/$target"
done

# put TARGET: stores stdin as one corpus file of TARGET.
put() {
    local tmp name
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ ! -s "$tmp" ]]; then
        rm -f "$tmp"
        return
    fi
    name=$(sha1sum "$tmp" | cut -d' ' -f1)
    mv "$tmp" "$corpus/$1/$name"
    chmod 644 "$corpus/$1/$name"
}

# put_lines TARGET: stores each line of stdin as its own corpus file of TARGET, with
# `\r`, `\n` and `\\` read as CR, LF and a backslash (any other `\` stays as it is).
put_lines() {
    local line
    while IFS= read -r line; do
        printf '%s' "$line" | perl -pe 's/\\([rn\\])/$1 eq "r" ? "\r" : $1 eq "n" ? "\n" : "\\"/ge' | put "$1"
    done
}

messages=(
    "$testdata"/rfc4475/*.dat
    "$testdata"/rfc5118/*.dat
    "$testdata"/rfc5118/wire/*.dat
)

# datagram and roundtrip: every torture message as it is.
for f in "${messages[@]}"; do
    put datagram <"$f"
    put roundtrip <"$f"
done

# stream: the first byte picks the chunk sizes (see `stream_chunks` in checks.rs):
# 0x00 feeds one byte at a time, 0x3a chunks of 1 to 1024 bytes, 0x0f the whole
# message at once. Then pipelines: each corpus folder's messages back to back, with
# an RFC 5626 CRLF CRLF ping between them.
for f in "${messages[@]}"; do
    for selector in '\x00' '\x3a'; do
        { printf "$selector"; cat "$f"; } | put stream
    done
done
for dir in rfc4475 rfc5118 rfc5118/wire; do
    {
        printf '\x57'
        for f in "$testdata/$dir"/*.dat; do
            cat "$f"
            printf '\r\n\r\n'
        done
    } | put stream
done
printf '\x01\r\n\r\n\r\n\r\n\r\n' | put stream

# uri: the Request-URI of each request, every <...> of a header, the addr-spec of
# From / To / Contact / Route / Record-Route fields written without <>, and the
# digest `uri` and `domain` parameters. Headers are unfolded first; bodies are skipped.
perl -e '
    my %seen;
    for my $file (@ARGV) {
        open(my $fh, "<:raw", $file) or die "$file: $!";
        local $/;
        my $msg = <$fh>;
        my ($head) = split /\r?\n\r?\n/, $msg, 2;
        $head =~ s/\r?\n[ \t]+/ /g;
        my @lines = split /\r?\n/, $head;
        my $start = shift @lines;
        my @uris;
        push @uris, $1 if $start !~ m{^SIP/} && $start =~ /^\S+ +(\S+)/;
        for my $line (@lines) {
            push @uris, $line =~ /<([^<>]*)>/g;
            if ($line =~ /^(?:to|t|from|f|contact|m|route|record-route|path)[ \t]*:[ \t]*([^<]*?)[ \t]*$/i) {
                for my $spec (split /,/, $1) {
                    $spec =~ s/^[ \t]+//;
                    $spec =~ s/;.*//;
                    push @uris, $spec if $spec =~ /^[A-Za-z][A-Za-z0-9+.-]*:/;
                }
            }
            push @uris, $line =~ /\b(?:uri|domain)[ \t]*=[ \t]*"([^"]*)"/gi;
        }
        for (@uris) {
            next if $_ eq "" || $seen{$_}++;
            (my $escaped = $_) =~ s/\\/\\\\/g;
            $escaped =~ s/\r/\\r/g;
            $escaped =~ s/\n/\\n/g;
            print "$escaped\n";
        }
    }
' "${messages[@]}" | put_lines uri

# A few URI forms the torture messages lack.
put_lines uri <<'EOF'
tel:+1-201-555-0123
tel:7042;phone-context=example.com
tel:863-1234;phone-context=+1-914-555
sips:alice@atlanta.com;transport=tcp?subject=project%20x&priority=urgent
sip:alice:secretword@atlanta.com;transport=tcp
sip:+1-212-555-1212:1234@gateway.com;user=phone
sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com
sip:alice;day=tuesday@atlanta.com
sip:%61lice@atlanta.com;transport=TCP
sip:[2001:db8::10]:5070;maddr=[2001:db8::20];lr
sip:user@192.0.2.1:65535;ttl=255;maddr=239.255.255.1
sip:[::ffff:192.0.2.128];ob
mailto:watson@bell-telephone.com
urn:service:sos
EOF

# digest: every Authorization, Proxy-Authorization, WWW-Authenticate,
# Proxy-Authenticate and Authentication-Info value in the torture messages, as
# the message holds it (continuation lines kept).
perl -e '
    for my $file (@ARGV) {
        open(my $fh, "<:raw", $file) or die "$file: $!";
        local $/;
        my $msg = <$fh>;
        my ($head) = split /\r?\n\r?\n/, $msg, 2;
        while ($head =~ /^(?:proxy-)?(?:authorization|authenticate|www-authenticate|authentication-info)[ \t]*:[ \t]*((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)/gim) {
            (my $escaped = $1) =~ s/\\/\\\\/g;
            $escaped =~ s/\r/\\r/g;
            $escaped =~ s/\n/\\n/g;
            print "$escaped\n";
        }
    }
' "${messages[@]}" | put_lines digest

# The examples of RFC 3261 §20.6, §20.7, §20.27, §20.28, §20.44 and §22.4, RFC 7616
# §3.9.1 and §3.9.2 (folds as `\r\n`), and a few forms they lack: `username*`,
# quoted-pairs, an other scheme, a quoted algorithm.
put_lines digest <<'EOF'
nextnonce="47364c23432d2e131a5fb210812c"
nextnonce="47364c23432d2e131a5fb210812c", qop=auth, rspauth="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", nc=00000001
Digest username="Alice", realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e", response="7587245234b3434cc3412213e5f113a5432"
Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5
Digest username="Alice", realm="atlanta.com", nonce="c60f3082ee1212b402a21831ae", response="245f23415f11432b3434341c022"
Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5
Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"
Digest\r\n       realm="http-auth@example.org",\r\n       qop="auth, auth-int",\r\n       algorithm=SHA-256,\r\n       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
Digest username="Mufasa",\r\n       realm="http-auth@example.org",\r\n       uri="/dir/index.html",\r\n       algorithm=SHA-256,\r\n       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n       nc=00000001,\r\n       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",\r\n       qop=auth,\r\n       response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",\r\n       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true
Digest username="488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec", realm="api@example.org", uri="/doe.json", algorithm=SHA-512-256, nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", nc=00000001, cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", qop=auth, response="ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd", opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", userhash=true
Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm="api@example.org", uri="/doe.json", nc=0000000A, qop="auth-int"
Digest realm="a\"b\\c", nonce="x", algorithm="MD5-sess", stale=true, qop=",auth,, auth-int ,"
Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==
NoOneKnowsThisScheme opaque-data=here
EOF

for target in datagram stream uri digest roundtrip; do
    printf '%-10s %4d files\n' "$target" "$(find "$corpus/$target" -type f | wc -l)"
done
