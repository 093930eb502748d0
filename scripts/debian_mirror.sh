# Sourced by scripts/arm64_check.sh and scripts/pi_walk.sh: the Debian mirror of a debootstrap,
# taken from DEBIAN_MIRROR or the host's own apt sources (no mirror host is written in this
# repository). Needs APT_ETC (default /etc/apt) and a die() function in the sourcing script.
# shellcheck shell=bash

APT_ETC="${APT_ETC:-/etc/apt}"

# URIs of the host's enabled apt sources, in order: deb822 "URIs:" lines of *.sources (stanzas
# with "Enabled: no" skipped), then the URI of one-line "deb [options] URI suite..." entries.
apt_uris() {
    local f
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        # paragraph mode: one record per stanza
        awk 'BEGIN { RS = "" } !/(^|\n)[Ee]nabled:[ \t]*[Nn]o/ {
                 n = split($0, line, "\n")
                 for (i = 1; i <= n; i++) if (line[i] ~ /^URIs:/) {
                     m = split(line[i], f, /[ \t]+/); for (j = 2; j <= m; j++) print f[j]
                 }
             }' "$f"
    done
    for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        sed -E -n 's/\[[^]]*\]//; s/^[ \t]*deb[ \t]+([^ \t]+).*/\1/p' "$f"
    done
}

# DEBIAN_MIRROR, else the first ".../debian" archive of the host's apt sources.
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$(apt_uris | grep -E '^https?://[^ ]+/debian/?$' | head -1 || true)"
    [[ -n "$uri" ]] || die "no Debian archive in $APT_ETC/sources.list{,.d}: set DEBIAN_MIRROR=<a Debian mirror URL>"
    printf '%s\n' "${uri%/}"
}
