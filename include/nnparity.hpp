/*
 * nnparity.hpp - header-only C++ wrappers over the C API of nnparity.h (C++11 and later).
 *
 * For C++ engines: the objects of the C API with their lifetimes tied to scope (a Dump is
 * closed, a Capture session finished, Rules and a Diff freed when they go out of scope), failures
 * as exceptions (nnparity::Error, carrying the nnp_status and the library's one-line message),
 * and taps that take std::string names, shapes in braces or vectors, typed pointers whose dtype
 * follows from their type, and printf-style name formats:
 *
 *     nnparity::Capture session("port.safetensors");       // or none: NNPARITY_CAPTURE works too
 *     nnparity::Capture::set_meta("engine", "myengine 1.2");
 *     nnparity::tap_inputf("in0", {tokens, dim}, x, "blk.%d.ffn_up", layer);
 *     nnparity::tapf("out0", {tokens, hidden}, h, "blk.%d.ffn_up", layer);
 *     session.close();                                     // throws if the dump is not finished
 *
 * As in C, with no session open a tap returns at once, before any name is formatted or any
 * allocation is made (the name and shape wrappers below allocate nothing). Everything here is
 * inline over the C functions: link against libnnparity as a C program does. docs/c-api.md
 * describes the capture API and these wrappers.
 */
#ifndef NNPARITY_HPP
#define NNPARITY_HPP

#include <array>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nnparity.h"

namespace nnparity {

/* ---------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------- */

/* A failed call: what() is the library's message (nnp_last_error() at the failure). */
class Error : public std::runtime_error {
public:
    /* The library's last message on this thread, for a call that just returned `status`. */
    explicit Error(nnp_status status) : Error(status, nnp_last_error()) {}
    Error(nnp_status status, const std::string &message)
        : std::runtime_error(message.empty() ? std::string(nnp_status_name(status)) : message),
          status_(status)
    {
    }
    nnp_status status() const noexcept { return status_; }

private:
    nnp_status status_;
};

/* Throw an Error for anything but NNP_OK. */
inline void check(nnp_status status)
{
    if (status != NNP_OK)
        throw Error(status);
}

/* ---------------------------------------------------------------------------------------------
 * Arguments: names, shapes, dtypes
 * ------------------------------------------------------------------------------------------- */

/* A NUL-terminated string argument: a C string (NULL allowed where the C API allows it) or a
 * std::string, passed on without a copy. Only for parameters: it does not own the text. */
class CStr {
public:
    CStr() noexcept : s_(nullptr) {}
    CStr(const char *s) noexcept : s_(s) {}
    CStr(const std::string &s) noexcept : s_(s.c_str()) {}
    const char *c_str() const noexcept { return s_; }

private:
    const char *s_;
};

/* A tensor's shape, row-major: {rows, cols} in braces (any integer type; a negative dimension
 * is an Error), a std::vector or std::array of dimensions, or a pointer and a count. Up to 8
 * dimensions are held inline, so a shape in braces costs no allocation. {} is a scalar. */
class Shape {
public:
    Shape() noexcept : n_(0), p_(inline_) {}
    Shape(const std::vector<std::uint64_t> &dims) : n_(count(dims.size())), p_(dims.data()) {}
    Shape(const std::uint64_t *dims, std::uint32_t ndim) noexcept : n_(ndim), p_(dims) {}
    template <std::size_t N>
    Shape(const std::array<std::uint64_t, N> &dims) noexcept
        : n_(static_cast<std::uint32_t>(N)), p_(dims.data())
    {
    }
    template <class T, class = typename std::enable_if<std::is_integral<T>::value>::type>
    Shape(std::initializer_list<T> dims) : n_(0), p_(inline_)
    {
        assign(dims.begin(), dims.end(), dims.size());
    }
    template <class T, class = typename std::enable_if<std::is_integral<T>::value &&
                                                       !std::is_same<T, std::uint64_t>::value>::type>
    Shape(const std::vector<T> &dims) : n_(0), p_(inline_)
    {
        assign(dims.begin(), dims.end(), dims.size());
    }
    Shape(const Shape &o) : n_(0), p_(inline_) { *this = o; }
    Shape &operator=(const Shape &o)
    {
        if (this != &o) {
            if (o.p_ == o.inline_ || o.p_ == o.heap_.data())
                assign(o.p_, o.p_ + o.n_, o.n_);
            else {
                n_ = o.n_;
                p_ = o.p_; /* the caller's own array, as the original points to it */
            }
        }
        return *this;
    }

    std::uint32_t ndim() const noexcept { return n_; }
    const std::uint64_t *dims() const noexcept { return p_; }
    std::uint64_t operator[](std::size_t i) const noexcept { return p_[i]; }
    /* The number of elements (1 for a scalar); an Error when it overflows. */
    std::uint64_t elements() const
    {
        std::uint64_t n = 1;
        for (std::uint32_t i = 0; i < n_; i++) {
            if (p_[i] && n > UINT64_MAX / p_[i])
                throw Error(NNP_ERR_ARG, "nnparity::Shape: the number of elements overflows");
            n *= p_[i];
        }
        return n;
    }
    std::vector<std::uint64_t> to_vector() const { return std::vector<std::uint64_t>(p_, p_ + n_); }

private:
    static std::uint32_t count(std::size_t n)
    {
        if (n > UINT32_MAX)
            throw Error(NNP_ERR_ARG, "nnparity::Shape: too many dimensions");
        return static_cast<std::uint32_t>(n);
    }
    template <class T> static bool negative(T v, std::true_type) noexcept { return v < 0; }
    template <class T> static bool negative(T, std::false_type) noexcept { return false; }
    template <class It> void assign(It first, It last, std::size_t n)
    {
        typedef typename std::iterator_traits<It>::value_type T;
        std::uint32_t k = count(n);
        std::uint64_t *dst = inline_;
        if (k > sizeof inline_ / sizeof *inline_) {
            heap_.resize(k);
            dst = heap_.data();
        }
        for (std::uint32_t i = 0; first != last; ++first, ++i) {
            if (negative(*first, std::is_signed<T>()))
                throw Error(NNP_ERR_ARG, "nnparity::Shape: dimension " + std::to_string(i) +
                                             " is negative");
            dst[i] = static_cast<std::uint64_t>(*first);
        }
        n_ = k;
        p_ = dst;
    }

    std::uint32_t n_;
    const std::uint64_t *p_;
    std::uint64_t inline_[8] = {};
    std::vector<std::uint64_t> heap_;
};

/* The dtype of a C++ element type: float F32, double F64, bool BOOL, and the integers by size
 * and signedness (int32_t I32, uint8_t U8, ...). F16, BF16 and F8 have no standard C++ type:
 * pass their nnp_dtype explicitly. A type with no dtype is a compile error. */
template <class T, class Enable = void> struct dtype_of;
template <> struct dtype_of<float> {
    static constexpr nnp_dtype value = NNP_F32;
};
template <> struct dtype_of<double> {
    static constexpr nnp_dtype value = NNP_F64;
};
template <> struct dtype_of<bool> {
    static_assert(sizeof(bool) == 1, "nnparity reads BOOL as one byte an element");
    static constexpr nnp_dtype value = NNP_BOOL;
};
template <class T>
struct dtype_of<T, typename std::enable_if<std::is_integral<T>::value &&
                                           !std::is_same<T, bool>::value>::type> {
    static constexpr nnp_dtype value =
        sizeof(T) == 1   ? (std::is_signed<T>::value ? NNP_I8 : NNP_U8)
        : sizeof(T) == 2 ? (std::is_signed<T>::value ? NNP_I16 : NNP_U16)
        : sizeof(T) == 4 ? (std::is_signed<T>::value ? NNP_I32 : NNP_U32)
                         : (std::is_signed<T>::value ? NNP_I64 : NNP_U64);
};

namespace detail {

template <class T> constexpr nnp_dtype dtype() { return dtype_of<typename std::remove_cv<T>::type>::value; }

inline nnp_tap_desc desc(CStr name, CStr role, CStr module_type, nnp_dtype dtype,
                         const Shape &shape)
{
    nnp_tap_desc d;
    d.name = name.c_str();
    d.role = role.c_str();
    d.module_type = module_type.c_str();
    d.dtype = dtype;
    d.ndim = shape.ndim();
    d.shape = shape.dims();
    return d;
}

/* Whether an injecting tap's status means "injected, or nothing to inject"; NOT_FOUND (the
 * reference holds no such record: the layer ran on its own input) is false; others throw. */
inline bool injected(nnp_status st)
{
    if (st == NNP_ERR_NOT_FOUND)
        return false;
    check(st);
    return true;
}

inline void check_elements(const char *who, std::size_t have, const Shape &shape)
{
    std::uint64_t want = shape.elements();
    if (have != want)
        throw Error(NNP_ERR_ARG, std::string(who) + ": the vector holds " + std::to_string(have) +
                                     " elements, its shape " + std::to_string(want));
}

/* A forward iterator over the elements obj[0], obj[1], ... of an indexable owner. */
template <class Owner, class T> class index_iterator {
public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T *;
    using reference = const T &;
    index_iterator(const Owner *o, std::size_t i) noexcept : o_(o), i_(i) {}
    reference operator*() const { return (*o_)[i_]; }
    pointer operator->() const { return &(*o_)[i_]; }
    index_iterator &operator++() noexcept
    {
        ++i_;
        return *this;
    }
    index_iterator operator++(int) noexcept
    {
        index_iterator old = *this;
        ++i_;
        return old;
    }
    bool operator==(const index_iterator &b) const noexcept { return o_ == b.o_ && i_ == b.i_; }
    bool operator!=(const index_iterator &b) const noexcept { return !(*this == b); }

private:
    const Owner *o_;
    std::size_t i_;
};

} // namespace detail

/* ---------------------------------------------------------------------------------------------
 * Taps: record a tensor, or (an input) take the reference's values first under injection.
 * All throw Error on failure; the input taps return false when the session injects and the
 * reference holds no such record (the layer then runs on its own input, which is recorded).
 * `module_type` (may be omitted) is the layer's kind, "Linear", "LayerNorm", ...
 * ------------------------------------------------------------------------------------------- */

inline void tap(CStr name, CStr role, nnp_dtype dtype, const Shape &shape, const void *data,
                CStr module_type = CStr())
{
    nnp_tap_desc d = detail::desc(name, role, module_type, dtype, shape);
    check(nnp_tap_record(&d, data));
}

template <class T>
void tap(CStr name, CStr role, const Shape &shape, const T *data, CStr module_type = CStr())
{
    tap(name, role, detail::dtype<T>(), shape, data, module_type);
}

/* A vector's elements, in `shape` (omitted: one dimension of data.size()). */
template <class T>
void tap(CStr name, CStr role, const std::vector<T> &data, const Shape &shape,
         CStr module_type = CStr())
{
    detail::check_elements("nnparity::tap", data.size(), shape);
    tap(name, role, detail::dtype<T>(), shape, data.data(), module_type);
}
template <class T> void tap(CStr name, CStr role, const std::vector<T> &data)
{
    std::uint64_t n = data.size();
    tap(name, role, detail::dtype<T>(), Shape(&n, 1), data.data());
}

/* A layer's parameter, recorded as name/param:<param> once a session (nnp_tap_param). */
inline void tap_param(CStr name, CStr param, nnp_dtype dtype, const Shape &shape,
                      const void *data)
{
    check(nnp_tap_param(name.c_str(), param.c_str(), dtype, shape.ndim(), shape.dims(), data));
}

template <class T> void tap_param(CStr name, CStr param, const Shape &shape, const T *data)
{
    tap_param(name, param, detail::dtype<T>(), shape, data);
}

inline bool tap_input(CStr name, CStr role, nnp_dtype dtype, const Shape &shape, void *data,
                      CStr module_type = CStr())
{
    nnp_tap_desc d = detail::desc(name, role, module_type, dtype, shape);
    return detail::injected(nnp_tap_inject(&d, data));
}

template <class T>
bool tap_input(CStr name, CStr role, const Shape &shape, T *data, CStr module_type = CStr())
{
    return tap_input(name, role, detail::dtype<T>(), shape, data, module_type);
}

template <class T>
bool tap_input(CStr name, CStr role, std::vector<T> &data, const Shape &shape,
               CStr module_type = CStr())
{
    detail::check_elements("nnparity::tap_input", data.size(), shape);
    return tap_input(name, role, detail::dtype<T>(), shape, data.data(), module_type);
}

/* The same with the name formatted as printf does, the format and its values last (checked by
 * gcc and clang as printf's are); nothing is formatted when no session is open. A name over
 * NNP_TAP_NAME_MAX bytes is an Error. */
inline void tapf(CStr role, nnp_dtype dtype, const Shape &shape, const void *data,
                 const char *name_fmt, ...) NNP_PRINTF(5, 6);
inline void tapf(CStr role, nnp_dtype dtype, const Shape &shape, const void *data,
                 const char *name_fmt, ...)
{
    nnp_tap_desc d = detail::desc(CStr(), role, CStr(), dtype, shape);
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_recordf(&d, data, name_fmt, args);
    va_end(args);
    check(st);
}

template <class T>
void tapf(CStr role, const Shape &shape, const T *data, const char *name_fmt, ...)
    NNP_PRINTF(4, 5);
template <class T>
void tapf(CStr role, const Shape &shape, const T *data, const char *name_fmt, ...)
{
    nnp_tap_desc d = detail::desc(CStr(), role, CStr(), detail::dtype<T>(), shape);
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_recordf(&d, data, name_fmt, args);
    va_end(args);
    check(st);
}

inline bool tap_inputf(CStr role, nnp_dtype dtype, const Shape &shape, void *data,
                       const char *name_fmt, ...) NNP_PRINTF(5, 6);
inline bool tap_inputf(CStr role, nnp_dtype dtype, const Shape &shape, void *data,
                       const char *name_fmt, ...)
{
    nnp_tap_desc d = detail::desc(CStr(), role, CStr(), dtype, shape);
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_injectf(&d, data, name_fmt, args);
    va_end(args);
    return detail::injected(st);
}

template <class T>
bool tap_inputf(CStr role, const Shape &shape, T *data, const char *name_fmt, ...)
    NNP_PRINTF(4, 5);
template <class T>
bool tap_inputf(CStr role, const Shape &shape, T *data, const char *name_fmt, ...)
{
    nnp_tap_desc d = detail::desc(CStr(), role, CStr(), detail::dtype<T>(), shape);
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_injectf(&d, data, name_fmt, args);
    va_end(args);
    return detail::injected(st);
}

/* ---------------------------------------------------------------------------------------------
 * Capture: the process's capture session, finished when the guard goes out of scope
 * ------------------------------------------------------------------------------------------- */

/* nnp_capture_options with owned strings; empty paths mean none. */
struct CaptureOptions {
    std::string inject_path;           /* reference dump to inject from */
    std::string rules_path;            /* rules mapping this engine's names onto the reference's */
    std::size_t expected_records = 0;  /* sizes the header room (0: unknown) */
    int rank = 0, world_size = 0;      /* world_size 0: from the launcher's environment */
};

/* Opens the process's session (one at a time: a second open is an Error) and finishes it when
 * destroyed. close() finishes it now and throws on failure (a full disk, a failed write: the
 * records written are kept in "<path>.partial" for `nnparity recover`); a destructor cannot
 * throw, so one that finds the session still open closes it and leaves the result for
 * Capture::last_close_status() and last_close_error(). Move-only; a moved-from guard closes
 * nothing. */
class Capture {
public:
    /* Record into `path` ("": inject only), injecting and mapping as `opts` says. */
    explicit Capture(const std::string &path, const CaptureOptions &opts = CaptureOptions())
    {
        nnp_capture_options o;
        nnp_capture_options_init(&o);
        o.inject_path = opts.inject_path.empty() ? nullptr : opts.inject_path.c_str();
        o.rules_path = opts.rules_path.empty() ? nullptr : opts.rules_path.c_str();
        o.expected_records = opts.expected_records;
        o.rank = opts.rank;
        o.world_size = opts.world_size;
        check(nnp_capture_open(path.empty() ? nullptr : path.c_str(), &o));
        open_ = true;
    }
    /* With the C options (filled by nnp_capture_options_init); path NULL: inject only. */
    Capture(const char *path, const nnp_capture_options &opts)
    {
        check(nnp_capture_open(path, &opts));
        open_ = true;
    }
    Capture(const Capture &) = delete;
    Capture &operator=(const Capture &) = delete;
    Capture(Capture &&o) noexcept : open_(o.open_) { o.open_ = false; }
    Capture &operator=(Capture &&) = delete;
    ~Capture()
    {
        if (open_)
            try_close();
    }

    /* Finish the session now: the dump is written and renamed into place. */
    void close() { check(try_close()); }
    /* The same, returning the status (nnp_last_error() says why); also kept for
     * last_close_status(). */
    nnp_status try_close() noexcept
    {
        if (!open_)
            return NNP_OK;
        open_ = false;
        nnp_status st = nnp_capture_close();
        remember(st, st ? nnp_last_error() : "");
        return st;
    }
    bool is_open() const noexcept { return open_; }

    /* The result of the last close by a Capture (NNP_OK before any), and its message. */
    static nnp_status last_close_status() noexcept { return last().status; }
    static std::string last_close_error()
    {
        std::lock_guard<std::mutex> hold(last().lock);
        return last().message;
    }

    /* nnp_capture_active(): 1 recording, 2 injecting, 3 both, 0 none (NNPARITY_CAPTURE and
     * NNPARITY_INJECT open one on the first look). */
    static int active() noexcept { return nnp_capture_active(); }
    /* A pair in the capture's __metadata__ (nnp_capture_set_meta: keys "nnparity.*" are
     * reserved); with no session, nothing. Works on a session the environment opened too. */
    static void set_meta(CStr key, CStr value)
    {
        check(nnp_capture_set_meta(key.c_str(), value.c_str()));
    }

private:
    struct close_result {
        std::mutex lock;
        nnp_status status = NNP_OK;
        std::string message;
    };
    static close_result &last() noexcept
    {
        static close_result r; /* one per program: an inline function's static */
        return r;
    }
    static void remember(nnp_status st, const char *message) noexcept
    {
        close_result &r = last();
        std::lock_guard<std::mutex> hold(r.lock);
        r.status = st;
        try {
            r.message = message;
        } catch (...) {
            r.message.clear(); /* out of memory: the status still says it failed */
        }
    }

    bool open_ = false;
};

/* ---------------------------------------------------------------------------------------------
 * Dump: a capture or checkpoint opened for reading
 * ------------------------------------------------------------------------------------------- */

/* nnp_dump_open's dump, closed when destroyed. Records are the library's nnp_record, handed out
 * by reference (never copy them: later versions may append fields); `for (const nnp_record &r :
 * dump)` visits them in execution order. Move-only. */
class Dump {
public:
    using iterator = detail::index_iterator<Dump, nnp_record>;

    explicit Dump(CStr path) : d_(nullptr) { check(nnp_dump_open(path.c_str(), &d_)); }
    /* Take ownership of a dump opened through the C API (NULL: none). */
    explicit Dump(nnp_dump *owned) noexcept : d_(owned) {}
    Dump(const Dump &) = delete;
    Dump &operator=(const Dump &) = delete;
    Dump(Dump &&o) noexcept : d_(o.d_) { o.d_ = nullptr; }
    Dump &operator=(Dump &&o) noexcept
    {
        if (this != &o) {
            nnp_dump_close(d_);
            d_ = o.d_;
            o.d_ = nullptr;
        }
        return *this;
    }
    ~Dump() { nnp_dump_close(d_); }

    /* Open the reference and the port at once, the second on a thread of its own. */
    static std::pair<Dump, Dump> open_both(CStr first, CStr second)
    {
        nnp_dump *a = nullptr, *b = nullptr;
        check(nnp_dump_open_both(first.c_str(), second.c_str(), &a, &b));
        return std::pair<Dump, Dump>(Dump(a), Dump(b));
    }

    std::size_t size() const noexcept { return d_ ? nnp_dump_count(d_) : 0; }
    /* Record i (an std::out_of_range past the end). */
    const nnp_record &record(std::size_t i) const
    {
        const nnp_record *r = d_ ? nnp_dump_record(d_, i) : nullptr;
        if (!r)
            throw std::out_of_range("nnparity::Dump: record " + std::to_string(i) + " of " +
                                    std::to_string(size()));
        return *r;
    }
    const nnp_record &operator[](std::size_t i) const { return record(i); }
    iterator begin() const noexcept { return iterator(this, 0); }
    iterator end() const noexcept { return iterator(this, size()); }

    /* The record of this tensor name, or nullptr; its index, or -1. */
    const nnp_record *find(CStr name) const noexcept
    {
        std::int64_t i = index_of(name);
        return i < 0 ? nullptr : nnp_dump_record(d_, static_cast<std::size_t>(i));
    }
    std::int64_t index_of(CStr name) const noexcept
    {
        return d_ && name.c_str() ? nnp_dump_find(d_, name.c_str()) : -1;
    }
    std::vector<std::uint64_t> shape(std::size_t i) const
    {
        const nnp_record &r = record(i);
        return std::vector<std::uint64_t>(r.shape, r.shape + r.ndim);
    }

    /* Record i's elements, little-endian and C-contiguous (record(i).nbytes long), living as
     * long as the dump; as T, after checking that T is the record's dtype. */
    const void *data(std::size_t i) const
    {
        record(i);
        const void *p = nullptr;
        check(nnp_dump_data(d_, i, &p));
        return p;
    }
    template <class T> const T *data_as(std::size_t i) const
    {
        const nnp_record &r = record(i);
        if (r.dtype != detail::dtype<T>())
            throw Error(NNP_ERR_ARG, std::string("nnparity::Dump: record '") + r.name + "' is " +
                                         nnp_dtype_name(r.dtype) + ", not " +
                                         nnp_dtype_name(detail::dtype<T>()));
        return static_cast<const T *>(data(i));
    }

    /* The value of a __metadata__ key, or nullptr; and every pair, in the file's order. */
    const char *meta(CStr key) const noexcept
    {
        return d_ && key.c_str() ? nnp_dump_meta_get(d_, key.c_str()) : nullptr;
    }
    std::vector<std::pair<std::string, std::string>> metadata() const
    {
        std::vector<std::pair<std::string, std::string>> out;
        for (std::size_t i = 0; d_ && i < nnp_dump_meta_count(d_); i++) {
            const char *k = nullptr, *v = nullptr;
            nnp_dump_meta_at(d_, i, &k, &v);
            out.emplace_back(k ? k : "", v ? v : "");
        }
        return out;
    }

    const char *path() const noexcept { return d_ ? nnp_dump_path(d_) : ""; }
    const char *format() const noexcept { return d_ ? nnp_dump_format(d_) : ""; }
    /* The C handle (still owned), or it handed over (the caller closes it). */
    nnp_dump *get() const noexcept { return d_; }
    nnp_dump *release() noexcept
    {
        nnp_dump *d = d_;
        d_ = nullptr;
        return d;
    }

private:
    nnp_dump *d_;
};

/* ---------------------------------------------------------------------------------------------
 * Rules and Diff
 * ------------------------------------------------------------------------------------------- */

/* Parsed rules (docs/rules.md), freed when destroyed; a default-constructed Rules is none.
 * Move-only. */
class Rules {
public:
    Rules() noexcept : r_(nullptr) {}
    static Rules load(CStr path)
    {
        nnp_rules *r = nullptr;
        check(nnp_rules_load(path.c_str(), &r));
        return Rules(r);
    }
    /* `origin` names the text in error messages ("FILE: line L, column C"). */
    static Rules parse(CStr text, CStr origin = "rules")
    {
        nnp_rules *r = nullptr;
        check(nnp_rules_parse(text.c_str(), origin.c_str(), &r));
        return Rules(r);
    }
    Rules(const Rules &) = delete;
    Rules &operator=(const Rules &) = delete;
    Rules(Rules &&o) noexcept : r_(o.r_) { o.r_ = nullptr; }
    Rules &operator=(Rules &&o) noexcept
    {
        if (this != &o) {
            nnp_rules_free(r_);
            r_ = o.r_;
            o.r_ = nullptr;
        }
        return *this;
    }
    ~Rules() { nnp_rules_free(r_); }

    /* A port name as the rules map it; *ignored (may be nullptr) says an ignore rule matched. */
    std::string map(CStr name, bool *ignored = nullptr) const
    {
        char *out = nullptr;
        bool ign = false;
        check(nnp_rules_map(r_, name.c_str(), &out, &ign));
        std::string s;
        try {
            s = out ? out : "";
        } catch (...) {
            nnp_free(out);
            throw;
        }
        nnp_free(out);
        if (ignored)
            *ignored = ign;
        return s;
    }
    explicit operator bool() const noexcept { return r_ != nullptr; }
    const nnp_rules *get() const noexcept { return r_; }

private:
    explicit Rules(nnp_rules *r) noexcept : r_(r) {}
    nnp_rules *r_;
};

/* nnp_diff_options filled with their defaults (by-dtype tolerances, alignment on), and `rules`. */
inline nnp_diff_options diff_options(const Rules &rules = Rules())
{
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.rules = rules.get();
    return o;
}

/* nnp_diff_dumps's result, freed when destroyed: the pairs (nnp_diff_pair, by reference, in the
 * reference's execution order; `for (const nnp_diff_pair &p : diff)`), the unmatched records and
 * where the port first diverges. The dumps must outlive the diff. Move-only. */
class Diff {
public:
    using iterator = detail::index_iterator<Diff, nnp_diff_pair>;

    Diff(Dump &ref, Dump &port, const Rules &rules = Rules()) : d_(nullptr)
    {
        nnp_diff_options o = diff_options(rules);
        check(nnp_diff_dumps(ref.get(), port.get(), &o, &d_));
    }
    Diff(Dump &ref, Dump &port, const nnp_diff_options &opts) : d_(nullptr)
    {
        check(nnp_diff_dumps(ref.get(), port.get(), &opts, &d_));
    }
    Diff(const Diff &) = delete;
    Diff &operator=(const Diff &) = delete;
    Diff(Diff &&o) noexcept : d_(o.d_) { o.d_ = nullptr; }
    Diff &operator=(Diff &&o) noexcept
    {
        if (this != &o) {
            nnp_diff_free(d_);
            d_ = o.d_;
            o.d_ = nullptr;
        }
        return *this;
    }
    ~Diff() { nnp_diff_free(d_); }

    std::size_t size() const noexcept { return d_ ? nnp_diff_pair_count(d_) : 0; }
    const nnp_diff_pair &pair(std::size_t i) const
    {
        const nnp_diff_pair *p = d_ ? nnp_diff_pair_at(d_, i) : nullptr;
        if (!p)
            throw std::out_of_range("nnparity::Diff: pair " + std::to_string(i) + " of " +
                                    std::to_string(size()));
        return *p;
    }
    const nnp_diff_pair &operator[](std::size_t i) const { return pair(i); }
    iterator begin() const noexcept { return iterator(this, 0); }
    iterator end() const noexcept { return iterator(this, size()); }

    /* Indices into the pairs; -1: none (nnparity.h says what each means). */
    std::int64_t first_divergence() const noexcept { return d_ ? nnp_diff_first_divergence(d_) : -1; }
    std::int64_t order_violation() const noexcept { return d_ ? nnp_diff_order_violation(d_) : -1; }
    std::int64_t nonfinite_origin() const noexcept { return d_ ? nnp_diff_nonfinite_origin(d_) : -1; }
    std::size_t aligned_count() const noexcept { return d_ ? nnp_diff_aligned_count(d_) : 0; }
    /* No pair fails and the port ran in the reference's order (what `nnparity diff` exits 0
     * for). */
    bool agrees() const noexcept { return first_divergence() < 0 && order_violation() < 0; }

    /* Record indices of the reference's and the port's records left without a partner. */
    std::vector<std::size_t> unmatched_ref() const
    {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; d_ && i < nnp_diff_unmatched_ref_count(d_); i++)
            v.push_back(nnp_diff_unmatched_ref_at(d_, i));
        return v;
    }
    std::vector<std::size_t> unmatched_port() const
    {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; d_ && i < nnp_diff_unmatched_port_count(d_); i++)
            v.push_back(nnp_diff_unmatched_port_at(d_, i));
        return v;
    }

    const nnp_diff *get() const noexcept { return d_; }

private:
    nnp_diff *d_;
};

} // namespace nnparity

#endif /* NNPARITY_HPP */
