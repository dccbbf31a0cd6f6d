#!/bin/sh
# Writes a file as a C byte array, for files compiled into a binary (the
# demo page): `embed.sh NAME FILE > out.c` defines
#   const unsigned char NAME[];  the bytes of FILE and a terminating NUL
#   const size_t NAME_len;       the byte count, without that NUL
# POSIX od and awk only (xxd is not installed everywhere).
set -eu

if [ $# -ne 2 ] || [ ! -r "$2" ]; then
    echo "usage: embed.sh NAME FILE" >&2
    exit 2
fi
name=$1
file=$2

printf '/* Generated from %s by broadcast/embed.sh; do not edit. */\n' "$file"
printf '#include <stddef.h>\n\n'
printf 'extern const unsigned char %s[];\nextern const size_t %s_len;\n\n' "$name" "$name"
printf 'const unsigned char %s[] = {\n' "$name"
od -An -v -tu1 "$file" | awk '
    { for (i = 1; i <= NF; i++) { printf "%s,", $i; if (++n % 24 == 0) printf "\n" } }
    END { printf "0\n" }'
printf '};\nconst size_t %s_len = sizeof(%s) - 1;\n' "$name" "$name"
