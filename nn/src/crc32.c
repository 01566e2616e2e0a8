/* crc32.c -- CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial
 * value and final xor 0xFFFFFFFF), four bits at a time from a 16-entry
 * table: small, and fast enough for parameter files. */
#include "nn_internal.h"

/* crc of each nibble value, shifted through four rounds of the polynomial */
static const uint32_t nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t nn_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (!p)
        return crc;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ nibble[crc & 15]; /* low nibble, then high */
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return ~crc;
}
