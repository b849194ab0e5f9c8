/*
 * Fixtures for the preview tests and bench, made at run time (nothing
 * binary is committed): images through libvips' savers, PDFs and hostile
 * PNGs written by hand. Each returns 0 or -1.
 */
#ifndef PARLEY_TESTS_PREVIEW_FIXTURES_H
#define PARLEY_TESTS_PREVIEW_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

/* A w x h picture (bands 1, 3 or 4) saved by the saver its suffix names
 * (.png .jpg .gif .webp .tif). noise: random pixels (photo-like size)
 * instead of smooth gradients. */
int fx_image(const char *path, int w, int h, int bands, int noise);
/* A PDF of pages pages of pw x ph points, each with rectangles and a line
 * of text. */
int fx_pdf(const char *path, int pages, int pw, int ph);
/* A valid PNG signature and IHDR claiming w x h (8-bit grey), one tiny
 * IDAT, IEND: what a decoder would have to allocate, it never gets. */
int fx_png_header(const char *path, uint32_t w, uint32_t h);
/* A 1-bit grey w x h PNG of zeros: a few hundred KB that inflate to
 * w*h pixels (a decompression bomb). */
int fx_png_bomb(const char *path, uint32_t w, uint32_t h);
int fx_write(const char *path, const void *d, size_t n);
/* The file's bytes (malloc'd, *n its size) or NULL. */
uint8_t *fx_read(const char *path, size_t *n);

#endif
