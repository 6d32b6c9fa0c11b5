/*
 * png_read.c - reading a PNG image (the picture under `nnparity relevance --image`) into 8-bit
 * RGB with libpng, whatever its colour type, bit depth or interlacing; alpha is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Larger images are refused rather than allocated: 16384 pixels a side is past any picture a
 * heatmap is laid over. */
#define MAX_SIDE 16384u

typedef struct {
    FILE *f;
    unsigned char *px;
    png_bytep *rows;
    int w, h;
    char msg[256];
} reader;

static void on_error(png_structp png, png_const_charp msg)
{
    reader *r = png_get_error_ptr(png);
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Decode r->f into r->px. libpng reports errors by longjmp: everything that changes after the
 * setjmp lives in *r, not in this function's locals. */
static bool decode(reader *r)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(r->msg, sizeof r->msg, "out of memory");
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return false;
    }
    png_init_io(png, r->f);
    png_set_user_limits(png, MAX_SIDE, MAX_SIDE);
    png_read_info(png, info);
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected row size after conversion to RGB");
    r->w = (int)w;
    r->h = (int)h;
    r->px = malloc((size_t)w * h * 3);
    r->rows = malloc((size_t)h * sizeof *r->rows);
    if (!r->px || !r->rows)
        png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++)
        r->rows[y] = r->px + (size_t)y * w * 3;
    png_read_image(png, r->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    return true;
}

int cli_png_read_rgb(const char *path, unsigned char **rgb, int *w, int *h)
{
    reader r = {0};
    unsigned char sig[8];
    *rgb = NULL;
    /* only a regular file: a FIFO would block the open (O_NONBLOCK), a device never end */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0) {
        cli_error("%s: cannot open: %s", path, strerror(errno));
        return EXIT_BAD_INPUT;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        cli_error("%s: not a regular file; --image reads a PNG file", path);
        close(fd);
        return EXIT_BAD_INPUT;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 || !(r.f = fdopen(fd, "rb"))) {
        cli_error("%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return EXIT_BAD_INPUT;
    }
    if (fread(sig, 1, 8, r.f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        cli_error("%s: not a PNG file (its first 8 bytes are not the PNG signature)", path);
        fclose(r.f);
        return EXIT_BAD_INPUT;
    }
    rewind(r.f);
    bool ok = decode(&r);
    fclose(r.f);
    free(r.rows);
    if (!ok) {
        free(r.px);
        cli_error("%s: cannot read the PNG: %s", path, r.msg);
        return strcmp(r.msg, "out of memory") == 0 ? EXIT_INTERNAL : EXIT_BAD_INPUT;
    }
    *rgb = r.px;
    *w = r.w;
    *h = r.h;
    return EXIT_AGREE;
}
