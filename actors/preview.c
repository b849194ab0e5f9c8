/*
 * preview: file types (libmagic) and previews (libvips) of uploads.
 * actors/files.c calls preview_sniff() and preview_submit() on its shard;
 * the jobs wait in one bounded FIFO and run one at a time on the preview
 * thread, the only thread that calls libvips; each result goes back to the
 * shard the caller named as an M_CALL (base.h) that runs done there. Calls
 * only base.c (msg_new) among the actor files.
 *
 * A job, on the preview thread:
 *   text types     read the first 303 bytes; snippet = the first <= 300
 *                  cut before a character that does not fit, if valid UTF-8;
 *   image types    thumbs/<sha>.jpg exists (the same bytes were previewed):
 *                  the header only, for w and h; else
 *                  1. open with the loader the type names (nothing else is
 *                     enabled), header only: refuse more than max_megapixels
 *                     (E2BIG) before any pixel is decoded;
 *                  2. reopen shrunk on load where the format can (JPEG 1/2,
 *                     1/4, 1/8; PDF and WebP rendered at scale);
 *                  3. thumbnail (<= 360 px), flattened on white, sRGB, saved
 *                     as JPEG to a temp name, fsynced, renamed, the
 *                     directory fsynced. The save pulls the decode; an eval
 *                     callback kills it past timeout_ms (ETIMEDOUT).
 *   other types    nothing: no thumb, no snippet, no error.
 *
 * What bounds a hostile file: the loader list (no ImageMagick, SVG, JPEG
 * 2000, JXL, ...: fewer parsers), the header check, the deadline, one vips
 * thread, no operation cache, sequential access (pixels stream through a
 * few strips). A GIF frame or an interlaced PNG is decoded whole: memory is
 * then up to max_megapixels * 8 bytes. A parse that never reaches the eval
 * loop (a header) is not under the deadline; every loader enabled here
 * reads its header in time linear in the file's size.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <magic.h>
#include <vips/vips.h>

#include "actors/base.h"
#include "actors/preview.h"

#define DEFAULT_MAX_MP 50
#define DEFAULT_TIMEOUT_MS 10000
#define FAILED_CAP 256 /* shas whose preview failed, remembered */

/* The loaders enabled (everything else of VipsForeignLoad is blocked) and
 * the libmagic types they serve. */
enum loader { L_NONE, L_PNG, L_JPEG, L_GIF, L_WEBP, L_TIFF, L_PDF };
static const struct {
	const char *mime, *cls;
	enum loader l;
} loaders[] = {
	{ "image/png", "VipsForeignLoadPngFile", L_PNG },
	{ "image/jpeg", "VipsForeignLoadJpegFile", L_JPEG },
	{ "image/gif", "VipsForeignLoadNsgifFile", L_GIF },
	{ "image/webp", "VipsForeignLoadWebpFile", L_WEBP },
	{ "image/tiff", "VipsForeignLoadTiffFile", L_TIFF },
	{ "application/pdf", "VipsForeignLoadPdfFile", L_PDF },
};

struct job {
	struct job *next;
	char sha[65];
	char mime[128];
	preview_done_fn *done;
	void *arg;
	unsigned shard;
	char path[]; /* NUL-terminated */
};

/* The result on its way to the caller's shard. */
struct m_preview {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	preview_done_fn *done;
	void *arg;
	struct preview_result r;
};

static struct {
	/* set by preview_init, read-only after */
	char thumbs[PATH_MAX - 128]; /* DATA/files/thumbs */
	uint64_t max_px;
	unsigned timeout_ms;
	pthread_t th;
	bool started;

	/* the queue: under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	unsigned n;
	bool stopping; /* also read by the eval callback, atomically */

	/* the preview thread's own */
	char failed[FAILED_CAP][65];
	int failed_err[FAILED_CAP];
	unsigned failed_next;

	/* libmagic: one handle per shard, made by that shard on first use;
	 * one under magic_mu for every other thread. They live as long as
	 * the process (a shard may sniff until it exits). */
	magic_t shard_magic[RT_MAX_SHARDS];
	magic_t shared_magic;
	pthread_mutex_t magic_mu;
} pv = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER,
	.magic_mu = PTHREAD_MUTEX_INITIALIZER,
};

/* ---- types ---------------------------------------------------------------- */

static enum loader loader_of(const char *mime)
{
	for (size_t i = 0; i < sizeof(loaders) / sizeof(loaders[0]); i++)
		if (!strcmp(mime, loaders[i].mime))
			return loaders[i].l;
	return L_NONE;
}

bool preview_is_image(const char *mime) { return loader_of(mime) != L_NONE; }

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && !strcmp(s + n - m, suf);
}

bool preview_is_text(const char *mime)
{
	static const char *const app[] = {
		"application/json", "application/xml", "application/javascript",
		"application/x-javascript", "application/ecmascript",
		"application/x-sh", "application/x-shellscript",
		"application/x-yaml", "application/yaml", "application/toml",
		"application/sql", "application/x-ndjson", "application/csv",
		"application/x-httpd-php", "application/x-perl",
		"application/x-ruby", "application/x-python",
	};

	if (!strncmp(mime, "text/", 5))
		return true;
	if (strncmp(mime, "application/", 12))
		return false; /* image/svg+xml is an image we do not render */
	for (size_t i = 0; i < sizeof(app) / sizeof(app[0]); i++)
		if (!strcmp(mime, app[i]))
			return true;
	return has_suffix(mime, "+json") || has_suffix(mime, "+xml");
}

/* ---- sniffing --------------------------------------------------------------- */

static magic_t magic_new(void)
{
	/* MIME type only; never look inside compressed data */
	magic_t m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS);

	if (!m)
		return NULL;
	if (magic_load(m, NULL)) {
		magic_close(m);
		return NULL;
	}
	return m;
}

static int sniff_with(magic_t m, const void *head, size_t n, char *mime,
		      size_t cap)
{
	const char *t = magic_buffer(m, head, n);

	if (!t || strlen(t) >= cap)
		return -EINVAL;
	memcpy(mime, t, strlen(t) + 1);
	return 0;
}

int preview_sniff(const void *head, size_t n, char *mime, size_t cap)
{
	rt_shard *self = rt_self();
	int rc;

	if (n > PREVIEW_SNIFF_BYTES)
		n = PREVIEW_SNIFF_BYTES;
	if (self) {
		/* this shard's own: written and read only by this thread */
		magic_t *m = &pv.shard_magic[rt_shard_id(self)];

		if (!*m)
			*m = magic_new();
		rc = *m ? sniff_with(*m, head, n, mime, cap) : -ENOMEM;
	} else {
		pthread_mutex_lock(&pv.magic_mu);
		if (!pv.shared_magic)
			pv.shared_magic = magic_new();
		rc = pv.shared_magic ? sniff_with(pv.shared_magic, head, n,
						  mime, cap)
				     : -ENOMEM;
		pthread_mutex_unlock(&pv.magic_mu);
	}
	if (rc && cap > 24)
		strcpy(mime, "application/octet-stream");
	return rc;
}

/* ---- answering ---------------------------------------------------------------- */

/* On the caller's shard. */
static void on_result(struct shard_state *ss, struct m_call *c)
{
	struct m_preview *m = (struct m_preview *)c;

	(void)ss;
	m->done(m->arg, &m->r);
	free(m);
}

/* Any thread: done(arg, r) on shard (copies r). */
static void answer(preview_done_fn *done, void *arg, unsigned shard,
		   const struct preview_result *r)
{
	struct m_preview *m;

	if (shard == PREVIEW_ON_WORKER) {
		done(arg, r);
		return;
	}
	assert(shard < RT_MAX_SHARDS);
	m = msg_new(sizeof(*m), M_CALL);
	m->c.fn = on_result;
	m->done = done;
	m->arg = arg;
	m->r = *r;
	/* the message is the shard's from here */
	rt_post(shard, &m->c.h);
}

static void answer_err(preview_done_fn *done, void *arg, unsigned shard,
		       int err)
{
	struct preview_result r = { .error = err };

	answer(done, arg, shard, &r);
}

/* ---- text ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 character at s (n bytes available), 0 if
 * invalid, -1 if it may be valid but is cut by the end of s. Rejects
 * overlong forms, surrogates and code points past U+10FFFF. */
static int utf8_char(const unsigned char *s, size_t n)
{
	unsigned c = s[0], need, cp, min;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1, cp = c & 0x1f, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		need = 2, cp = c & 0x0f, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 3, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if (i >= n)
			return -1;
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return (int)need + 1;
}

/* The snippet of the n bytes of s (the file's first bytes; short only
 * when the file is): the longest prefix of whole characters of at most
 * PREVIEW_SNIPPET_MAX bytes, "" if any of it is not valid UTF-8 or it has a
 * NUL. Exposed for the tests through preview_snippet_of. */
static void snippet_of(const unsigned char *s, size_t n, char *out)
{
	size_t i = 0;

	out[0] = 0;
	while (i < n && i < PREVIEW_SNIPPET_MAX) {
		int k = utf8_char(s + i, n - i);

		if (k == -1)
			break; /* the file ends inside the character */
		if (k == 0 || s[i] == 0)
			return;
		if (i + (size_t)k > PREVIEW_SNIPPET_MAX)
			break; /* the cut: this character does not fit */
		i += (size_t)k;
	}
	memcpy(out, s, i);
	out[i] = 0;
}

void preview_snippet_of(const void *s, size_t n, char *out);
void preview_snippet_of(const void *s, size_t n, char *out)
{
	snippet_of(s, n, out);
}

static void text_job(const struct job *j, struct preview_result *r)
{
	unsigned char buf[PREVIEW_SNIPPET_MAX + 3];
	size_t n = 0;
	int fd = open(j->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		r->error = EIO;
		return;
	}
	while (n < sizeof(buf)) {
		ssize_t k = read(fd, buf + n, sizeof(buf) - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r->error = EIO;
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (!r->error)
		snippet_of(buf, n, r->snippet);
}

/* ---- images ------------------------------------------------------------------------ */

struct deadline {
	uint64_t until_ns;
	bool hit;
};

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* vips' "eval" signal: on the thread computing, between tiles/strips. */
static void on_eval(VipsImage *im, VipsProgress *p, void *user)
{
	struct deadline *d = user;

	(void)p;
	if (mono_ns() > d->until_ns ||
	    __atomic_load_n(&pv.stopping, __ATOMIC_RELAXED)) {
		d->hit = true;
		vips_image_set_kill(im, TRUE);
	}
}

/* Open path with the loader of l and the options given (NULL-terminated
 * name/value pairs, as vips' own calls). */
static VipsImage *load(enum loader l, const char *path, const char *opt,
		       double val)
{
	VipsImage *im = NULL;
	int rc = -1;

#define LOAD(fn, ...)                                                        \
	fn(path, &im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",           \
	   VIPS_FAIL_ON_ERROR, ##__VA_ARGS__, NULL)
	switch (l) {
	case L_PNG: rc = LOAD(vips_pngload); break;
	case L_GIF: rc = LOAD(vips_gifload); break;
	case L_TIFF: rc = LOAD(vips_tiffload); break;
	case L_JPEG:
		rc = opt ? LOAD(vips_jpegload, "shrink", (int)val)
			 : LOAD(vips_jpegload);
		break;
	case L_WEBP:
		rc = opt ? LOAD(vips_webpload, "scale", val)
			 : LOAD(vips_webpload);
		break;
	case L_PDF:
		rc = opt ? LOAD(vips_pdfload, "scale", val)
			 : LOAD(vips_pdfload);
		break;
	case L_NONE: break;
	}
#undef LOAD
	return rc ? NULL : im;
}

static void remember_failed(const char *sha, int err)
{
	unsigned i = pv.failed_next++ % FAILED_CAP;

	memcpy(pv.failed[i], sha, 65);
	pv.failed_err[i] = err;
}

static int failed_before(const char *sha)
{
	for (unsigned i = 0; i < FAILED_CAP; i++)
		if (!strcmp(pv.failed[i], sha))
			return pv.failed_err[i];
	return 0;
}

/* fsync a path (file or directory); 0 or -1. */
static int sync_path(const char *p, int flags)
{
	int fd = open(p, flags | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* The thumbnail of im (decoded as the save pulls it) into dst. */
static int save_thumb(VipsImage *im, const char *dst, const char *tmp,
		      struct deadline *d)
{
	VipsImage *t[4] = { 0 };
	VipsImage *cur;
	int err = EINVAL;

	if (vips_thumbnail_image(im, &t[0], PREVIEW_THUMB_PX, "height",
				 PREVIEW_THUMB_PX, "size", VIPS_SIZE_DOWN, NULL))
		goto out;
	cur = t[0];
	if (vips_image_hasalpha(cur)) {
		double white[3] = { 255, 255, 255 };
		int nb = cur->Bands - 1 > 3 ? 3 : cur->Bands - 1;
		VipsArrayDouble *bg = vips_array_double_new(white, nb);

		if (vips_flatten(cur, &t[1], "background", bg, NULL)) {
			vips_area_unref(VIPS_AREA(bg));
			goto out;
		}
		vips_area_unref(VIPS_AREA(bg));
		cur = t[1];
	}
	if (!(cur->Type == VIPS_INTERPRETATION_B_W &&
	      cur->BandFmt == VIPS_FORMAT_UCHAR && cur->Bands == 1) &&
	    !(cur->Type == VIPS_INTERPRETATION_sRGB &&
	      cur->BandFmt == VIPS_FORMAT_UCHAR && cur->Bands == 3)) {
		if (vips_colourspace(cur, &t[2], VIPS_INTERPRETATION_sRGB,
				     NULL) ||
		    vips_cast_uchar(t[2], &t[3], NULL))
			goto out;
		cur = t[3];
	}
	vips_image_set_progress(cur, TRUE);
	g_signal_connect(cur, "eval", G_CALLBACK(on_eval), d);
	if (vips_jpegsave(cur, tmp, "Q", 80, "strip", TRUE, NULL)) {
		err = d->hit ? ETIMEDOUT : EINVAL;
		goto out;
	}
	err = EIO;
	if (sync_path(tmp, O_RDONLY) || rename(tmp, dst) ||
	    sync_path(pv.thumbs, O_RDONLY | O_DIRECTORY))
		goto out;
	err = 0;
out:
	for (int i = 3; i >= 0; i--)
		if (t[i])
			g_object_unref(t[i]);
	if (err)
		unlink(tmp);
	return err;
}

static void image_job(const struct job *j, struct preview_result *r)
{
	enum loader l = loader_of(j->mime);
	char dst[PATH_MAX], tmp[PATH_MAX];
	struct deadline d;
	VipsImage *im, *sm = NULL;
	uint64_t w, h;
	bool have;
	int prev;

	snprintf(dst, sizeof(dst), "%s/%s.jpg", pv.thumbs, j->sha);
	snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", pv.thumbs, j->sha,
		 (long)getpid());
	have = access(dst, F_OK) == 0;
	if (!have && (prev = failed_before(j->sha))) {
		r->error = prev; /* the same bytes failed already */
		return;
	}
	d.hit = false;
	d.until_ns = mono_ns() + (uint64_t)pv.timeout_ms * 1000000u;

	/* 1. the header only: no pixel is decoded yet */
	if (!(im = load(l, j->path, NULL, 0))) {
		r->error = EINVAL;
		goto fail;
	}
	w = (uint64_t)im->Xsize;
	h = (uint64_t)vips_image_get_page_height(im);
	r->w = (uint32_t)w;
	r->h = (uint32_t)h;
	if (have) {
		/* the same bytes made this thumbnail before */
		r->thumb = true;
		g_object_unref(im);
		return;
	}
	if (w * (uint64_t)im->Ysize > pv.max_px || w > 0xffffffu ||
	    h > 0xffffffu) {
		r->error = E2BIG;
		g_object_unref(im);
		goto fail;
	}

	/* 2. shrink on load where the format can */
	{
		double longer = (double)(w > h ? w : h), f;

		if (l == L_JPEG && longer >= 2 * PREVIEW_THUMB_PX) {
			int s = 1;

			while (s < 8 && longer / (s * 2) >= PREVIEW_THUMB_PX)
				s *= 2;
			sm = load(l, j->path, "shrink", s);
		} else if ((l == L_PDF || l == L_WEBP) &&
			   longer > PREVIEW_THUMB_PX) {
			f = PREVIEW_THUMB_PX / longer;
			sm = load(l, j->path, "scale", f);
		}
		if (sm) {
			g_object_unref(im);
			im = sm;
		}
	}

	/* 3. decode, shrink, save */
	r->error = save_thumb(im, dst, tmp, &d);
	g_object_unref(im);
	if (!r->error) {
		r->thumb = true;
		return;
	}
fail:
	if (r->error != EIO)
		remember_failed(j->sha, r->error);
	vips_error_clear();
}

static void run_job(const struct job *j, struct preview_result *r)
{
	memset(r, 0, sizeof(*r));
	if (preview_is_image(j->mime))
		image_job(j, r);
	else if (preview_is_text(j->mime))
		text_job(j, r);
}

/* ---- the preview thread ------------------------------------------------------------ */

static void *worker(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&pv.mu);
	for (;;) {
		struct job *j;
		struct preview_result r;

		while (!pv.head && !pv.stopping)
			pthread_cond_wait(&pv.cv, &pv.mu);
		if (!pv.head)
			break; /* stopping, nothing left */
		j = pv.head;
		pv.head = j->next;
		if (!pv.head)
			pv.tail = NULL;
		pv.n--;
		pthread_mutex_unlock(&pv.mu);
		run_job(j, &r);
		answer(j->done, j->arg, j->shard, &r);
		free(j);
		pthread_mutex_lock(&pv.mu);
	}
	pthread_mutex_unlock(&pv.mu);
	vips_thread_shutdown();
	return NULL;
}

static bool is_sha(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[64] == 0;
}

void preview_submit(const char *sha256hex, const char *path,
		    const char *mime, preview_done_fn *done, void *arg,
		    unsigned reply_shard)
{
	size_t pl = strlen(path);
	struct job *j;
	int err = 0;

	if (!is_sha(sha256hex) || strlen(mime) >= sizeof(j->mime)) {
		answer_err(done, arg, reply_shard, EINVAL);
		return;
	}
	j = calloc(1, sizeof(*j) + pl + 1);
	if (!j) {
		answer_err(done, arg, reply_shard, ENOMEM);
		return;
	}
	memcpy(j->sha, sha256hex, 65);
	strcpy(j->mime, mime);
	memcpy(j->path, path, pl + 1);
	j->done = done;
	j->arg = arg;
	j->shard = reply_shard;

	pthread_mutex_lock(&pv.mu);
	if (!pv.started || pv.stopping)
		err = ECANCELED;
	else if (pv.n >= PREVIEW_QUEUE_MAX)
		err = EAGAIN; /* the newest waits no longer than the rest */
	else {
		if (pv.tail)
			pv.tail->next = j;
		else
			pv.head = j;
		pv.tail = j;
		pv.n++;
		pthread_cond_signal(&pv.cv);
	}
	pthread_mutex_unlock(&pv.mu);
	if (err) {
		free(j);
		answer_err(done, arg, reply_shard, err);
	}
}

#ifdef __SANITIZE_ADDRESS__
/* LeakSanitizer asks the program for suppressions: fontconfig (poppler
 * loads it to render a PDF's text) keeps a cache it never frees, and
 * FcFini() is not safe while cairo may hold fonts. Only that library's own
 * allocations are excused. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libfontconfig.so\n";
}
#endif

/* ---- start, stop ----------------------------------------------------------------------- */

/* vips' warnings are about the uploads' bytes, not about parleyd */
static void quiet(const gchar *domain, GLogLevelFlags lvl, const gchar *msg,
		  gpointer u)
{
	(void)domain, (void)lvl, (void)msg, (void)u;
}

static int mkdir_p(const char *p)
{
	char b[PATH_MAX];
	size_t n = strlen(p);

	if (n >= sizeof(b))
		return -ENAMETOOLONG;
	memcpy(b, p, n + 1);
	for (char *s = b + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(b, 0700) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(b, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

int preview_init(const char *data_dir, unsigned max_megapixels,
		 unsigned timeout_ms)
{
	int rc;

	if ((size_t)snprintf(pv.thumbs, sizeof(pv.thumbs), "%s/files/thumbs",
			     data_dir) >= sizeof(pv.thumbs))
		return -ENAMETOOLONG;
	if ((rc = mkdir_p(pv.thumbs)))
		return rc;
	pv.max_px = (uint64_t)(max_megapixels ? max_megapixels
					      : DEFAULT_MAX_MP) * 1000000u;
	pv.timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS;

	if (vips_init("parleyd"))
		return -EIO;
	/* one decode at a time, no operation cache (nothing is opened
	 * twice on purpose; a cache only holds memory and files) */
	vips_concurrency_set(1);
	vips_cache_set_max(0);
	vips_cache_set_max_mem(0);
	vips_cache_set_max_files(0);
	/* only the loaders of `loaders`: the rest (ImageMagick, SVG, JPEG
	 * 2000, JXL, FITS, Matlab, ...) is attack surface we do not need */
	vips_operation_block_set("VipsForeignLoad", TRUE);
	for (size_t i = 0; i < sizeof(loaders) / sizeof(loaders[0]); i++)
		vips_operation_block_set(loaders[i].cls, FALSE);
	g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE,
			  quiet, NULL);

	pv.stopping = false;
	if (pthread_create(&pv.th, NULL, worker, NULL)) {
		vips_shutdown();
		return -EAGAIN;
	}
	pthread_mutex_lock(&pv.mu);
	pv.started = true;
	pthread_mutex_unlock(&pv.mu);
	return 0;
}

void preview_stop(void)
{
	struct job *j, *next;

	pthread_mutex_lock(&pv.mu);
	if (!pv.started || pv.stopping) {
		pthread_mutex_unlock(&pv.mu);
		return;
	}
	/* the eval callback reads it without the lock: the job running is
	 * killed at its next strip */
	__atomic_store_n(&pv.stopping, true, __ATOMIC_RELAXED);
	j = pv.head;
	pv.head = pv.tail = NULL;
	pv.n = 0;
	pthread_cond_signal(&pv.cv);
	pthread_mutex_unlock(&pv.mu);
	for (; j; j = next) {
		next = j->next;
		answer_err(j->done, j->arg, j->shard, ECANCELED);
		free(j);
	}
	pthread_join(pv.th, NULL);
	vips_shutdown();
}
