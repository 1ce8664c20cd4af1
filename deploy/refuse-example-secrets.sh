#!/bin/sh
# Run first by each compose service whose image is not the trainer's (mongo, redis, flower): exits 2
# with one line naming the first variable that is unset, empty, or still a `.env.example` placeholder
# (a value starting with "change-me"). Usage: refuse-example-secrets.sh VAR [VAR ...]
for name in "$@"; do
    case "$name" in *[!A-Za-z0-9_]*|"") echo "invalid setting name: $name" >&2; exit 2 ;; esac
    eval "value=\${$name-}"
    case "$value" in
        "") echo "invalid setting: $name is not set" >&2; exit 2 ;;
        change-me*|*:change-me*) echo "invalid setting: $name holds the example value of .env.example; set a secret of your own" >&2; exit 2 ;;
    esac
done
