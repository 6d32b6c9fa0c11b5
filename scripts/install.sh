#!/usr/bin/env bash
# install.sh - installs nnparity under PREFIX, staged under DESTDIR when it is set, or removes
# exactly what it installs. Run by `make install` and `make uninstall`:
#   scripts/install.sh install|uninstall
# with the Makefile's variables in the environment: BUILD (the built tree), DESTDIR, PREFIX,
# BINDIR, LIBDIR, INCLUDEDIR, MANDIR, BASHCOMPDIR, PYTHON, PYTHONDIR (empty: the interpreter's
# site-packages for PREFIX), INSTALL_PYTHON (no: leave the Python package out) and CC (asked for
# the multiarch library directory and the pointer size).
#
# Paths written into the installed files (pkg-config, CMake, the Python package's record of
# the library directory) are the final ones, under PREFIX, never DESTDIR's.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # '&' in a path stays an '&'
cd "$(dirname "$0")/.."

action=${1:-}
BUILD=${BUILD:-build}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
MANDIR=${MANDIR:-$PREFIX/share/man}
BASHCOMPDIR=${BASHCOMPDIR:-$PREFIX/share/bash-completion/completions}
PYTHON=${PYTHON:-/usr/bin/python3}
PYTHONDIR=${PYTHONDIR:-}
INSTALL_PYTHON=${INSTALL_PYTHON:-yes}
CC=${CC:-cc}
PKGCONFIGDIR=$LIBDIR/pkgconfig
CMAKEDIR=$LIBDIR/cmake/nnparity

die() {
    echo "install.sh: $*" >&2
    exit 1
}

for dir in "$PREFIX" "$BINDIR" "$LIBDIR" "$INCLUDEDIR" "$MANDIR" "$BASHCOMPDIR"; do
    case $dir in
        /*) ;;
        *) die "'$dir' is not an absolute path (PREFIX and the directories must be)" ;;
    esac
done

# The version is the header's (NNP_VERSION_*); the soname carries its major.
header_number() {
    sed -n "s/^#define NNP_VERSION_$1 \\([0-9]*\\)\$/\\1/p" include/nnparity.h
}
major=$(header_number MAJOR)
version=$major.$(header_number MINOR).$(header_number PATCH)
[ -n "$major" ] || die "no NNP_VERSION_MAJOR in include/nnparity.h"
soname=libnnparity.so.$major

# The dynamic linker finds libraries in its own directories without help; anywhere else
# (/usr/local/lib included: ld.so.cache only knows it after ldconfig, which is not ours to
# run) programs linked against the library need an rpath to it.
needs_rpath() {
    local dir=${LIBDIR%/} triplet
    triplet=$("$CC" -print-multiarch 2>/dev/null || true)
    case $dir in
        /lib | /usr/lib | /lib64 | /usr/lib64) return 1 ;;
        "/lib/$triplet" | "/usr/lib/$triplet") return 1 ;;
        *) return 0 ;;
    esac
}

# Where the Python package goes: Debian's interpreter reads /usr/local/lib/pythonX.Y/dist-packages
# and /usr/lib/python3/dist-packages; any other prefix gets the standard
# PREFIX/lib/pythonX.Y/site-packages (on sys.path through PYTHONPATH or a .pth file).
python_dir() {
    [ -n "$PYTHONDIR" ] && { echo "$PYTHONDIR"; return; }
    "$PYTHON" - "$PREFIX" <<'EOF'
import sys
import sysconfig

prefix = sys.argv[1].rstrip("/") or "/"
schemes = sysconfig.get_scheme_names()
if prefix == "/usr/local" and "posix_local" in schemes:
    print(sysconfig.get_path("purelib", "posix_local", {"base": "/usr", "platbase": "/usr"}))
elif prefix == "/usr" and "deb_system" in schemes:
    print(sysconfig.get_path("purelib", "deb_system", {"base": "/usr", "platbase": "/usr"}))
else:
    print(sysconfig.get_path("purelib", "posix_prefix", {"base": prefix, "platbase": prefix}))
EOF
}

# A template from packaging/ with @NAME@ replaced.
fill() { # template
    local text
    text=$(<"$1")
    text=${text//@VERSION@/$version}
    text=${text//@MAJOR@/$major}
    text=${text//@PREFIX@/$PREFIX}
    text=${text//@LIBDIR@/$libdir_text}
    text=${text//@INCLUDEDIR@/$includedir_text}
    text=${text//@RPATH@/$rpath_text}
    text=${text//@SIZEOF_VOID_P@/$sizeof_void_p}
    printf '%s\n' "$text"
}

put() { # mode source destination (under DESTDIR)
    install -D -m "$1" "$2" "$DESTDIR$3"
    echo "  $DESTDIR$3"
}

do_install() {
    local built
    for built in nnparity "$soname" libnnparity.a man/nnparity.1 completion/nnparity; do
        [ -e "$BUILD/$built" ] || die "$BUILD/$built is missing: run make first"
    done
    local tmp man
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expanded now, on purpose
    trap "rm -rf '$tmp'" EXIT

    echo "installing nnparity $version into $DESTDIR$PREFIX:"
    put 755 "$BUILD/nnparity" "$BINDIR/nnparity"
    put 755 "$BUILD/$soname" "$LIBDIR/$soname"
    ln -sfn "$soname" "$DESTDIR$LIBDIR/libnnparity.so"
    echo "  $DESTDIR$LIBDIR/libnnparity.so -> $soname"
    put 644 "$BUILD/libnnparity.a" "$LIBDIR/libnnparity.a"
    put 644 include/nnparity.h "$INCLUDEDIR/nnparity.h"
    if [ -f include/nnparity.hpp ]; then
        put 644 include/nnparity.hpp "$INCLUDEDIR/nnparity.hpp"
    fi

    # pkg-config's paths relative to ${prefix} where they can be (pkg-config --define-prefix)
    local rpath_text='' sizeof_void_p libdir_text=$LIBDIR includedir_text=$INCLUDEDIR
    sizeof_void_p=$(echo | "$CC" -dM -E - | sed -n 's/^#define __SIZEOF_POINTER__ //p')
    case $LIBDIR in "$PREFIX"/*) libdir_text="\${prefix}${LIBDIR#"$PREFIX"}" ;; esac
    case $INCLUDEDIR in "$PREFIX"/*) includedir_text="\${prefix}${INCLUDEDIR#"$PREFIX"}" ;; esac
    needs_rpath && rpath_text="-Wl,-rpath,\${libdir} "
    fill packaging/nnparity.pc.in >"$tmp/nnparity.pc"
    libdir_text=$LIBDIR includedir_text=$INCLUDEDIR rpath_text=''
    needs_rpath && rpath_text=1
    fill packaging/nnparityConfig.cmake.in >"$tmp/nnparityConfig.cmake"
    fill packaging/nnparityConfigVersion.cmake.in >"$tmp/nnparityConfigVersion.cmake"
    put 644 "$tmp/nnparity.pc" "$PKGCONFIGDIR/nnparity.pc"
    put 644 "$tmp/nnparityConfig.cmake" "$CMAKEDIR/nnparityConfig.cmake"
    put 644 "$tmp/nnparityConfigVersion.cmake" "$CMAKEDIR/nnparityConfigVersion.cmake"

    for man in "$BUILD"/man/nnparity*.1; do
        put 644 "$man" "$MANDIR/man1/${man##*/}"
    done
    put 644 "$BUILD/completion/nnparity" "$BASHCOMPDIR/nnparity"
    # the MPI plugin (built where mpicc is): `nnparity diff --mpi` looks for it in
    # <its bin>/../lib/nnparity/, a directory of nnparity's own whatever LIBDIR is
    if [ -f "$BUILD/libnnparity_mpi.so" ]; then
        put 755 "$BUILD/libnnparity_mpi.so" "$(dirname "$BINDIR")/lib/nnparity/libnnparity_mpi.so"
    fi

    if [ "$INSTALL_PYTHON" = no ]; then
        return
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 ||
        die "$PYTHON has no pip (Debian: python3-pip); INSTALL_PYTHON=no skips the Python package"
    local pydir build_abs info
    pydir=$(python_dir)
    build_abs=$(cd "$BUILD" && pwd)
    # an earlier version's metadata would stay beside the new one's
    for info in "$DESTDIR$pydir"/nnparity-*.dist-info; do
        [ -e "$info" ] && rm -rf -- "$info"
    done
    # The package records LIBDIR (nnparity/_install.py) instead of carrying a copy of the
    # library; its scratch files go to $BUILD/python, not into python/.
    NNPARITY_BUILD=$build_abs NNPARITY_LIBDIR=$LIBDIR PIP_ROOT_USER_ACTION=ignore \
        "$PYTHON" -m pip install --quiet --no-index --no-build-isolation --no-deps --no-compile \
        --disable-pip-version-check --upgrade --target "$DESTDIR$pydir" ./python
    echo "  $DESTDIR$pydir/nnparity"
    echo "  $DESTDIR$pydir/nnparity-$version.dist-info"
}

remove() { # paths under DESTDIR
    local path
    for path; do
        if [ -e "$DESTDIR$path" ] || [ -L "$DESTDIR$path" ]; then
            rm -rf -- "$DESTDIR$path"
            echo "  $DESTDIR$path"
        fi
    done
}

do_uninstall() {
    local man pydir info
    echo "removing nnparity from $DESTDIR$PREFIX:"
    remove "$BINDIR/nnparity" "$LIBDIR/libnnparity.so" "$LIBDIR/$soname" "$LIBDIR/libnnparity.a" \
        "$INCLUDEDIR/nnparity.h" "$INCLUDEDIR/nnparity.hpp" "$PKGCONFIGDIR/nnparity.pc" \
        "$CMAKEDIR/nnparityConfig.cmake" "$CMAKEDIR/nnparityConfigVersion.cmake" \
        "$MANDIR/man1/nnparity.1" "$BASHCOMPDIR/nnparity"
    # a page for each command: those of the tree installed, whichever they were
    for man in "$DESTDIR$MANDIR"/man1/nnparity-*.1; do
        [ -e "$man" ] && remove "${man#"$DESTDIR"}"
    done
    remove "$(dirname "$BINDIR")/lib/nnparity/libnnparity_mpi.so"
    rmdir "$DESTDIR$(dirname "$BINDIR")/lib/nnparity" 2>/dev/null || true
    rmdir "$DESTDIR$CMAKEDIR" 2>/dev/null || true
    if [ -n "$PYTHONDIR" ] || "$PYTHON" -c '' 2>/dev/null; then
        pydir=$(python_dir)
        remove "$pydir/nnparity"
        for info in "$DESTDIR$pydir"/nnparity-*.dist-info; do
            [ -e "$info" ] && remove "${info#"$DESTDIR"}"
        done
    fi
    return 0
}

case $action in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) die "usage: install.sh install|uninstall" ;;
esac
