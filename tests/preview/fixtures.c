#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vips/vips.h>
#include <zlib.h>

#include "tests/preview/fixtures.h"

int fx_write(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	int rc;

	if (!f)
		return -1;
	rc = fwrite(d, 1, n, f) == n ? 0 : -1;
	if (fclose(f))
		rc = -1;
	return rc;
}

uint8_t *fx_read(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	long sz;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (sz = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET))
		goto out;
	b = malloc((size_t)sz + 1);
	if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
		free(b);
		b = NULL;
	}
	*n = (size_t)sz;
out:
	fclose(f);
	return b;
}

int fx_image(const char *path, int w, int h, int bands, int noise)
{
	size_t n = (size_t)w * h * bands;
	uint8_t *px = malloc(n);
	uint32_t s = 12345;
	VipsImage *im;
	int rc;

	if (!px)
		return -1;
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int b = 0; b < bands; b++) {
				uint8_t v;

				s = s * 1103515245u + 12345u;
				v = noise ? (uint8_t)(((x * 7 + y * 3) & 0xff) / 2 +
						      (s >> 25))
					  : (uint8_t)((x * (b + 1) + y * (3 - b)) & 0xff);
				if (bands == 4 && b == 3)
					v = (uint8_t)(x < w / 2 ? 255 : 128);
				px[((size_t)y * w + x) * bands + b] = v;
			}
	im = vips_image_new_from_memory_copy(px, n, w, h, bands,
					      VIPS_FORMAT_UCHAR);
	free(px);
	if (!im)
		return -1;
	rc = vips_image_write_to_file(im, path, NULL);
	g_object_unref(im);
	return rc ? -1 : 0;
}

int fx_pdf(const char *path, int pages, int pw, int ph)
{
	/* objects: 1 catalog, 2 pages, 3 font, then per page i: 4+2i page,
	 * 5+2i content */
	size_t cap = 4096 + (size_t)pages * 2048, len = 0;
	char *b = malloc(cap);
	long *off = calloc((size_t)(4 + 2 * pages), sizeof(long));
	int nobj = 3 + 2 * pages, rc;

	if (!b || !off) {
		free(b);
		free(off);
		return -1;
	}
#define P(...) (len += (size_t)snprintf(b + len, cap - len, __VA_ARGS__))
	P("%%PDF-1.4\n");
	off[1] = (long)len;
	P("1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
	off[2] = (long)len;
	P("2 0 obj\n<< /Type /Pages /Count %d /Kids [", pages);
	for (int i = 0; i < pages; i++)
		P(" %d 0 R", 4 + 2 * i);
	P(" ] >>\nendobj\n");
	off[3] = (long)len;
	P("3 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\n"
	  "endobj\n");
	for (int i = 0; i < pages; i++) {
		char c[512];
		int cl = snprintf(c, sizeof(c),
				  "0.2 0.4 0.8 rg 40 40 %d %d re f\n"
				  "0.9 0.3 0.1 rg 80 %d 200 120 re f\n"
				  "BT /F1 24 Tf 60 %d Td (Page %d of parley) Tj ET\n",
				  pw - 80, ph / 3, ph / 2, ph - 80, i + 1);

		off[4 + 2 * i] = (long)len;
		P("%d 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d]"
		  " /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
		  "\nendobj\n", 4 + 2 * i, pw, ph, 5 + 2 * i);
		off[5 + 2 * i] = (long)len;
		P("%d 0 obj\n<< /Length %d >>\nstream\n%sendstream\nendobj\n",
		  5 + 2 * i, cl, c);
	}
	{
		long xref = (long)len;

		P("xref\n0 %d\n0000000000 65535 f \n", nobj + 1);
		for (int i = 1; i <= nobj; i++)
			P("%010ld 00000 n \n", off[i]);
		P("trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%ld\n%%%%EOF\n",
		  nobj + 1, xref);
	}
#undef P
	rc = fx_write(path, b, len);
	free(b);
	free(off);
	return rc;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Appends a PNG chunk (length, type, data, CRC) to out at *len. */
static void chunk(uint8_t *out, size_t *len, const char *type,
		  const uint8_t *d, uint32_t n)
{
	uint8_t *p = out + *len;

	be32(p, n);
	memcpy(p + 4, type, 4);
	if (n)
		memcpy(p + 8, d, n);
	be32(p + 8 + n, (uint32_t)crc32(0, p + 4, 4 + n));
	*len += 12 + n;
}

static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a,
				    0x0a };

int fx_png_header(const char *path, uint32_t w, uint32_t h)
{
	uint8_t out[256], ihdr[13], idat[64];
	uLongf il = sizeof(idat);
	uint8_t row[2] = { 0, 0 };
	size_t len = 8;

	memcpy(out, png_sig, 8);
	be32(ihdr, w);
	be32(ihdr + 4, h);
	ihdr[8] = 8, ihdr[9] = 0, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;
	chunk(out, &len, "IHDR", ihdr, 13);
	if (compress(idat, &il, row, sizeof(row)) != Z_OK)
		return -1;
	chunk(out, &len, "IDAT", idat, (uint32_t)il);
	chunk(out, &len, "IEND", NULL, 0);
	return fx_write(path, out, len);
}

int fx_png_bomb(const char *path, uint32_t w, uint32_t h)
{
	size_t rowb = 1 + (w + 7) / 8, cap = 1 << 20, len = 8;
	uint8_t *row = calloc(1, rowb), *z = malloc(cap), *out = NULL;
	uint8_t ihdr[13];
	z_stream s;
	int rc = -1;

	memset(&s, 0, sizeof(s));
	if (!row || !z || deflateInit(&s, 9) != Z_OK)
		goto out;
	s.next_out = z;
	s.avail_out = (uInt)cap;
	for (uint32_t y = 0; y < h; y++) {
		s.next_in = row;
		s.avail_in = (uInt)rowb;
		while (s.avail_in)
			if (deflate(&s, Z_NO_FLUSH) != Z_OK || !s.avail_out)
				goto end;
	}
	if (deflate(&s, Z_FINISH) != Z_STREAM_END)
		goto end;
	out = malloc(s.total_out + 128);
	if (!out)
		goto end;
	memcpy(out, png_sig, 8);
	be32(ihdr, w);
	be32(ihdr + 4, h);
	ihdr[8] = 1, ihdr[9] = 0, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;
	chunk(out, &len, "IHDR", ihdr, 13);
	chunk(out, &len, "IDAT", z, (uint32_t)s.total_out);
	chunk(out, &len, "IEND", NULL, 0);
	rc = fx_write(path, out, len);
end:
	deflateEnd(&s);
out:
	free(row);
	free(z);
	free(out);
	return rc;
}
