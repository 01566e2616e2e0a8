# Included by the top-level CMakeLists.txt when AD_FUZZ is ON, before the
# libraries are defined. Like AD_SANITIZE, it instruments every object of
# the build with ASan + UBSan; it adds the coverage instrumentation
# libFuzzer steers by (-fsanitize=fuzzer-no-link), so the fuzzers see
# inside autodiff and nn. The harnesses themselves (tests/fuzz) link
# libFuzzer's main with -fsanitize=fuzzer. libFuzzer ships with clang only.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR
    "AD_FUZZ=ON needs clang (libFuzzer comes with it), but the C compiler is "
    "${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER_VERSION} (${CMAKE_C_COMPILER}). "
    "Configure a fresh build directory with CC=clang, e.g. "
    "CC=clang cmake -S . -B build-fuzz -DAD_FUZZ=ON, or run scripts/run-fuzzers.sh.")
endif()
if(AD_TSAN)
  message(FATAL_ERROR "AD_FUZZ=ON cannot be combined with AD_TSAN=ON (ASan and TSan exclude each other)")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                    -fno-omit-frame-pointer -g)
add_link_options(-fsanitize=address,undefined)
