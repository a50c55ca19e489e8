#!/bin/sh
# Writes to $1 the workspace reduced to what dependency resolution needs: the root Cargo.toml and
# Cargo.lock, every member's Cargo.toml, and an empty source file for every target those manifests
# declare. Building that compiles all dependencies; the layer changes only when a manifest does.
set -eu
out="$1"
mkdir -p "$out"
cp Cargo.toml Cargo.lock "$out/"
for manifest in */Cargo.toml; do
    dir=$(dirname "$manifest")
    mkdir -p "$out/$dir/src"
    cp "$manifest" "$out/$dir/"
    echo 'fn main() {}' > "$out/$dir/src/main.rs"
    : > "$out/$dir/src/lib.rs"
    # Targets with an explicit path, or [[test]]/[[bench]]/[[example]]/[[bin]] found by name.
    awk '
        function flush() {
            if (table == "") return
            if (path != "") print path
            else if (table == "test") print "tests/" name ".rs"
            else if (table == "bench") print "benches/" name ".rs"
            else if (table == "example") print "examples/" name ".rs"
            else if (table == "bin" && name != package) print "src/bin/" name ".rs"
        }
        /^\[/ {
            flush(); table = ""; name = ""; path = ""
            if ($0 ~ /^\[\[(test|bench|example|bin)\]\]/) { table = $0; gsub(/[\[\] ]/, "", table) }
            else if ($0 ~ /^\[lib\]/) table = "lib"
            section = $0
            next
        }
        /^name *=/ {
            v = $0; sub(/^name *= *"/, "", v); sub(/".*/, "", v)
            if (section == "[package]") package = v; else name = v
        }
        /^path *=/ && table != "" { v = $0; sub(/^path *= *"/, "", v); sub(/".*/, "", v); path = v }
        END { flush() }
    ' "$manifest" | while read -r target; do
        mkdir -p "$out/$dir/$(dirname "$target")"
        [ -e "$out/$dir/$target" ] || echo 'fn main() {}' > "$out/$dir/$target"
    done
done
