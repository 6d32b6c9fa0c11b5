/*
 * test_crc32.c - every CRC-32 implementation this CPU runs gives zlib's crc32 for every length
 * around its step sizes, any alignment and any starting CRC; combining gives the CRC of the
 * whole; the check value of the CRC-32 catalogue holds.
 */
#include "testutil.h"

#include <zlib.h>

#include "common/crc32.h"

static void test_check_value(void **state)
{
    (void)state;
    /* the catalogue's check: CRC-32/ISO-HDLC of "123456789" */
    for (int k = 0; k < NNP_CRC_IMPLS; k++)
        if (nnp__crc32_available((nnp_crc_impl)k))
            assert_int_equal(nnp__crc32_with((nnp_crc_impl)k, 0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(nnp__crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(nnp__crc32(0, NULL, 0), 0);
    assert_true(nnp__crc32_available(NNP_CRC_ZLIB));
}

static void test_matches_zlib(void **state)
{
    (void)state;
    enum { N = 5000 };
    unsigned char *buf = malloc(N + 64);
    assert_non_null(buf);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < N + 64; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    const uint32_t starts[] = {0, 1, 0xFFFFFFFFu, 0x12345678u};
    int tried = 0;
    for (int k = 0; k < NNP_CRC_IMPLS; k++) {
        if (!nnp__crc32_available((nnp_crc_impl)k))
            continue;
        tried++;
        for (size_t off = 0; off < 5; off++)
            for (size_t n = 0; n < N; n += n < 600 ? 1 : 97)
                for (size_t s = 0; s < sizeof starts / sizeof *starts; s++) {
                    uint32_t want = (uint32_t)crc32(starts[s], buf + off, (uInt)n);
                    uint32_t got = nnp__crc32_with((nnp_crc_impl)k, starts[s], buf + off, n);
                    if (got != want)
                        fail_msg("%s: length %zu at offset %zu from 0x%08x: 0x%08x, zlib 0x%08x",
                                 nnp__crc32_impl_name((nnp_crc_impl)k), n, off, starts[s], got,
                                 want);
                }
    }
    printf("crc32: implementations run here: %d; default %s\n", tried,
           nnp__crc32_available(NNP_CRC_VPCLMUL)  ? "vpclmul"
           : nnp__crc32_available(NNP_CRC_PCLMUL) ? "pclmul"
                                                  : "zlib");
    free(buf);
}

static void test_combine(void **state)
{
    (void)state;
    unsigned char buf[3000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    uint32_t whole = nnp__crc32(0, buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut += 250) {
        uint32_t a = nnp__crc32(0, buf, cut), b = nnp__crc32(0, buf + cut, sizeof buf - cut);
        assert_int_equal(nnp__crc32_combine(a, b, sizeof buf - cut), whole);
    }
    /* one flipped bit changes it */
    buf[1234] ^= 0x10;
    assert_int_not_equal(nnp__crc32(0, buf, sizeof buf), whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_matches_zlib),
        cmocka_unit_test(test_combine),
    };
    return cmocka_run_group_tests_name("crc32", tests, NULL, NULL);
}
