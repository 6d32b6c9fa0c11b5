/*
 * foreign.c - files nnparity does not read but that people hand it: ONNX models, HDF5 (Keras),
 * TensorFlow SavedModels, Keras 3 archives, bare Python pickles, and text (an HTML page, a
 * report, a rules file). Each is refused with one line that names what the file is and what
 * nnparity reads instead, rather than with the complaint of the reader that would otherwise take
 * it (a safetensors header length of exabytes). formats/registry.c finds them by their first
 * bytes; the loaders here only say why not.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "formats/formats.h"

#define READS "nnparity reads safetensors, npy/npz, PyTorch checkpoints and GGUF"

/* The first bytes of a file, for the message; 0 when it cannot be read. */
static size_t head_of(const char *path, unsigned char *buf, size_t n)
{
    int fd;
    struct stat st;
    if (nnp__open_regular(path, &fd, &st))
        return 0;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got > 0 ? (size_t)got : 0;
}

/* The producer an ONNX model names in field 2 when it follows ir_version: "pytorch 1.13.0". */
static void onnx_producer(const unsigned char *h, size_t n, char *out, size_t size)
{
    *out = 0;
    size_t i = 1;
    while (i < n && (h[i] & 0x80))
        i++;
    i++;
    const char *sep = "";
    size_t used = 0;
    /* producer_name (0x12) and producer_version (0x1a), short strings */
    while (i + 1 < n && (h[i] == 0x12 || h[i] == 0x1a) && h[i + 1] < 0x80 && used + 2 < size) {
        size_t len = h[i + 1];
        if (i + 2 + len > n)
            break;
        for (size_t k = 0; k < len; k++)
            if (h[i + 2 + k] < 0x20 || h[i + 2 + k] > 0x7e)
                return;
        int w = snprintf(out + used, size - used, "%s%.*s", sep, (int)len, h + i + 2);
        if (w < 0 || (size_t)w >= size - used)
            break;
        used += (size_t)w;
        sep = " ";
        i += 2 + len;
    }
}

nnp_status nnp__onnx_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    unsigned char h[128];
    char producer[96];
    onnx_producer(h, head_of(path, h, sizeof h), producer, sizeof producer);
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is an ONNX model%s%s%s; " READS " (export its weights, e.g. "
                     "np.savez('w.npz', **{t.name: onnx.numpy_helper.to_array(t) for t in "
                     "onnx.load(path).graph.initializer}), or capture the model it was exported "
                     "from with the PyTorch bridge)",
                     path, *producer ? " (from " : "", producer, *producer ? ")" : "");
}

nnp_status nnp__hdf5_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is an HDF5 file (a Keras .h5 model or weights); " READS
                     " (export the tensors, e.g. np.savez('w.npz', **{w.path: w.numpy() for w in "
                     "model.weights}), w.name before Keras 3)", path);
}

nnp_status nnp__keras_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is a Keras 3 model archive (.keras); " READS
                     " (export the tensors, e.g. np.savez('w.npz', **{w.path: w.numpy() for w in "
                     "keras.saving.load_model(path).weights}))", path);
}

nnp_status nnp__savedmodel_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is a TensorFlow SavedModel; " READS " (export its variables, e.g. "
                     "np.savez('w.npz', **{v.name: v.numpy() for v in "
                     "tf.saved_model.load(dir).variables}))", path);
}

nnp_status nnp__pickle_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is a bare Python pickle, not a torch.save checkpoint (a zip); " READS
                     " and runs no pickle (save the tensors with torch.save(state_dict, f) or "
                     "safetensors.torch.save_file(state_dict, f))", path);
}

/* "schema": "nnparity.diff/1" of a JSON report, or "" */
static void report_schema(const unsigned char *h, size_t n, char *out, size_t size)
{
    *out = 0;
    const char *key = memmem(h, n, "\"nnparity.", 10);
    if (!key)
        return;
    size_t at = (size_t)((const unsigned char *)key - h) + 1, len = 0;
    while (at + len < n && h[at + len] != '"' && len + 1 < size)
        len++;
    if (at + len < n && h[at + len] == '"')
        snprintf(out, size, "%.*s", (int)len, (const char *)h + at);
}

static bool starts_nocase(const unsigned char *h, size_t n, const char *s)
{
    size_t m = strlen(s);
    if (n < m)
        return false;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = h[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)s[i])
            return false;
    }
    return true;
}

nnp_status nnp__text_refuse(nnp_dump *d, const char *path)
{
    (void)d;
    unsigned char h[256];
    size_t n = head_of(path, h, sizeof h), skip = 0;
    while (skip < n && (h[skip] == ' ' || h[skip] == '\t' || h[skip] == '\r' || h[skip] == '\n'))
        skip++;
    const unsigned char *t = h + skip;
    size_t tn = n - skip;
    char schema[64];
    report_schema(h, n, schema, sizeof schema);
    if (tn && t[0] == '{' && *schema)
        return nnp__fail(NNP_ERR_UNSUPPORTED,
                         "%s: this is an nnparity report (JSON, schema %s), not a dump; " READS
                         " (a report names the dumps it was made from)", path, schema);
    if (starts_nocase(t, tn, "### nnparity "))
        return nnp__fail(NNP_ERR_UNSUPPORTED,
                         "%s: this is an nnparity report (Markdown), not a dump; " READS
                         " (a report names the dumps it was made from)", path);
    if (starts_nocase(t, tn, "<!doctype html") || starts_nocase(t, tn, "<html"))
        return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: this is an HTML page, not a tensor file; " READS,
                         path);
    /* the first line, to show what the file is */
    size_t len = 0;
    while (len < tn && len < 40 && t[len] != '\n' && t[len] != '\r')
        len++;
    while (len && (t[len - 1] & 0xc0) == 0x80) /* whole UTF-8 characters only */
        len--;
    if (len && t[len - 1] >= 0xc0)
        len--;
    bool cut = len < tn && t[len] != '\n' && t[len] != '\r';
    return nnp__fail(NNP_ERR_UNSUPPORTED,
                     "%s: this is a text file (it starts \"%.*s%s\"), not a tensor file; " READS
                     " (a rules file is given with --rules)", path, (int)len, (const char *)t,
                     cut ? "..." : "");
}
