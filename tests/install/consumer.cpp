// consumer.cpp - the C++ side of the install tests: a C++ program that finds an installed
// nnparity through CMake's find_package and links the shared library (nnparity::nnparity).
// It writes a dump, reads it back and prints the record count and the library's version.
//   consumer_cpp DIR   prints "nnparity VERSION from C++: 1 records ok"
#include <cstdio>
#include <string>

#include "nnparity.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer_cpp DIR\n");
        return 2;
    }
    if (nnp_version_number() / 10000 != NNP_VERSION_MAJOR) {
        std::fprintf(stderr, "consumer_cpp: header %s, library %s\n", NNP_VERSION_STRING,
                     nnp_version());
        return 1;
    }
    const std::string path = std::string(argv[1]) + "/consumer_cpp.safetensors";
    nnp_writer *w = nullptr;
    const float data[4] = {1, 2, 3, 4};
    const uint64_t shape[2] = {2, 2};
    nnp_record_desc desc = {};
    desc.module = "cpp";
    desc.role = "out0";
    desc.dtype = NNP_F32;
    desc.ndim = 2;
    desc.shape = shape;
    nnp_dump *d = nullptr;
    if (nnp_writer_open(path.c_str(), 1, &w) != NNP_OK ||
        nnp_writer_add(w, &desc, data) != NNP_OK || nnp_writer_close(w) != NNP_OK ||
        nnp_dump_open(path.c_str(), &d) != NNP_OK) {
        std::fprintf(stderr, "consumer_cpp: %s\n", nnp_last_error());
        return 1;
    }
    const bool ok = nnp_dump_count(d) == 1;
    std::printf("nnparity %s from C++: %zu records %s\n", nnp_version(), nnp_dump_count(d),
                ok ? "ok" : "WRONG");
    nnp_dump_close(d);
    return ok ? 0 : 1;
}
