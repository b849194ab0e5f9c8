/*
 * auth: HS256 JWTs. Called by the session for `hello`, by REST and by
 * `parleyd token`. libjwt 1.10 checks the signature but accepts any HMAC alg
 * signed with the same secret, in any spelling ("hs256"), ignores `crit`
 * and validates no claims, so the header and every claim PROTOCOL.md
 * requires are checked here, on the token's own JSON: alg exactly "HS256",
 * no `crit`, `sub`/`ws` ids, `exp` and `nbf` numbers (integer or not,
 * compared without arithmetic that could overflow), 30 s of skew.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/actors.h"
#include "runtime/log.h"

#define SKEW_S 30
#define TOKEN_MAX 8192

/* base64url without padding, as JWTs write their segments. */
static int b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap,
			 size_t *outlen)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		uint32_t v;

		if (ch >= 'A' && ch <= 'Z')
			v = (uint32_t)(ch - 'A');
		else if (ch >= 'a' && ch <= 'z')
			v = (uint32_t)(ch - 'a') + 26;
		else if (ch >= '0' && ch <= '9')
			v = (uint32_t)(ch - '0') + 52;
		else if (ch == '-')
			v = 62;
		else if (ch == '_')
			v = 63;
		else
			return -1;
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return -1;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*outlen = o;
	return 0;
}

/* One segment of the token as a JSON object (NULL if it is not one). A
 * member named twice is refused: which of the two counts is not something
 * two parsers agree on. */
static json_t *segment(const char *s, size_t n)
{
	uint8_t buf[TOKEN_MAX];
	json_error_t err;
	size_t len;
	json_t *j;

	if (b64url_decode(s, n, buf, sizeof(buf), &len))
		return NULL;
	j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &err);
	if (j && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* A NumericDate claim: JSON integer or real seconds. */
struct numdate {
	bool is_int;
	int64_t i;
	double d;
};

/* 0: found, 1: absent, -1: present but not a number */
static int get_numdate(json_t *claims, const char *key, struct numdate *v)
{
	json_t *j = json_object_get(claims, key);

	if (!j)
		return 1;
	if (json_is_integer(j)) {
		v->is_int = true;
		v->i = (int64_t)json_integer_value(j);
		return 0;
	}
	if (json_is_real(j)) {
		v->is_int = false;
		v->d = json_real_value(j);
		return 0;
	}
	return -1;
}

static int64_t sat_add(int64_t a, int64_t b)
{
	if (b > 0 && a > INT64_MAX - b)
		return INT64_MAX;
	if (b < 0 && a < INT64_MIN - b)
		return INT64_MIN;
	return a + b;
}

/* -1, 0, 1 as v is before, at, after t; no arithmetic on v, so any value
 * a token carries compares without overflow. */
static int numdate_cmp(const struct numdate *v, int64_t t)
{
	if (v->is_int)
		return v->i < t ? -1 : v->i > t;
	/* t is a few billion at most in practice; as a double it is exact
	 * up to 2^53, and any double compares with it */
	return v->d < (double)t ? -1 : v->d > (double)t;
}

/* v as whole seconds, clamped to int64 (a double outside the range has
 * no int64 value: converting it would be undefined). */
static int64_t numdate_s(const struct numdate *v)
{
	if (v->is_int)
		return v->i;
	if (!(v->d < 9223372036854775808.0))
		return INT64_MAX;
	if (!(v->d >= -9223372036854775808.0))
		return INT64_MIN;
	return (int64_t)v->d;
}

static bool copy_id(json_t *claims, const char *claim, char *dst)
{
	json_t *j = json_object_get(claims, claim);
	size_t n;

	if (!json_is_string(j))
		return false;
	n = json_string_length(j);
	if (!proto_id_valid(json_string_value(j), n))
		return false;
	memcpy(dst, json_string_value(j), n);
	dst[n] = 0;
	return true;
}

/* libjwt checks the signature (with whatever HMAC alg the header names,
 * spelled in any case); everything else is checked here on the header and
 * the claims as they are in the token. */
int auth_verify(const uint8_t *key, size_t keylen, const char *token,
		size_t toklen, int64_t now_s, struct auth_claims *out,
		const char **why)
{
	char buf[TOKEN_MAX + 1];
	jwt_t *jwt = NULL;
	json_t *head = NULL, *claims = NULL, *j;
	const char *dot1, *dot2;
	struct numdate exp, nbf;
	int rc = -1, r;

	if (toklen == 0 || toklen > TOKEN_MAX) {
		*why = "token missing or too long";
		return -1;
	}
	memcpy(buf, token, toklen);
	buf[toklen] = 0;
	if (memchr(token, 0, toklen) ||
	    jwt_decode(&jwt, buf, key, (int)keylen) || !jwt) {
		*why = "bad token signature";
		goto out;
	}
	dot1 = memchr(buf, '.', toklen);
	dot2 = dot1 ? memchr(dot1 + 1, '.', toklen - (size_t)(dot1 + 1 - buf))
		    : NULL;
	if (!dot2 || !(head = segment(buf, (size_t)(dot1 - buf))) ||
	    !(claims = segment(dot1 + 1, (size_t)(dot2 - dot1 - 1)))) {
		*why = "token header or claims are not JSON objects";
		goto out;
	}
	/* exactly "HS256": libjwt takes "hs256" (and HS384...) too */
	j = json_object_get(head, "alg");
	if (!json_is_string(j) || strcmp(json_string_value(j), "HS256") ||
	    json_string_length(j) != 5) {
		*why = "token alg must be HS256";
		goto out;
	}
	/* RFC 7515 4.1.11: extensions the server does not know must be
	 * refused, and it knows none */
	if (json_object_get(head, "crit")) {
		*why = "token crit header is not supported";
		goto out;
	}
	memset(out, 0, sizeof(*out));
	if (!copy_id(claims, "sub", out->sub) ||
	    !copy_id(claims, "ws", out->ws)) {
		*why = "token needs valid sub and ws claims";
		goto out;
	}
	if (get_numdate(claims, "exp", &exp) || numdate_cmp(&exp, 0) <= 0) {
		*why = "token needs an exp claim";
		goto out;
	}
	/* expired: exp + skew < now, written so that nothing overflows */
	if (numdate_cmp(&exp, sat_add(now_s, -SKEW_S)) < 0) {
		*why = "token expired";
		goto out;
	}
	out->exp = numdate_s(&exp);
	r = get_numdate(claims, "nbf", &nbf);
	if (r < 0) {
		*why = "token nbf must be a number";
		goto out;
	}
	if (r == 0) {
		if (numdate_cmp(&nbf, sat_add(now_s, SKEW_S)) > 0) {
			*why = "token not yet valid";
			goto out;
		}
		out->nbf = numdate_s(&nbf);
	}
	j = json_object_get(claims, "name");
	if (json_is_string(j)) {
		const char *v = json_string_value(j);
		size_t n = strlen(v);

		/* at most 128 bytes, cut between characters: the name goes
		 * back to clients, whose decoders refuse broken UTF-8 */
		if (n >= sizeof(out->name)) {
			n = sizeof(out->name) - 1;
			while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)
				n--;
		}
		memcpy(out->name, v, n);
		out->name[n] = 0;
	}
	j = json_object_get(claims, "role");
	out->admin = json_is_string(j) && !strcmp(json_string_value(j), "admin");
	rc = 0;
out:
	json_decref(head);
	json_decref(claims);
	jwt_free(jwt);
	return rc;
}

char *auth_mint(const uint8_t *key, size_t keylen, const char *sub,
		const char *ws, int64_t exp, const char *name, const char *role)
{
	jwt_t *jwt = NULL;
	char *tok = NULL;

	if (jwt_new(&jwt))
		return NULL;
	if (jwt_add_grant(jwt, "sub", sub) || jwt_add_grant(jwt, "ws", ws) ||
	    jwt_add_grant_int(jwt, "exp", exp) ||
	    (name && jwt_add_grant(jwt, "name", name)) ||
	    (role && jwt_add_grant(jwt, "role", role)) ||
	    jwt_set_alg(jwt, JWT_ALG_HS256, key, (int)keylen))
		goto out;
	tok = jwt_encode_str(jwt);
out:
	jwt_free(jwt);
	return tok;
}

/* Makes path hold a new random secret unless it exists by now: written to
 * a temporary file beside it, synced, then link()ed into place, so that no
 * reader ever sees a partly written secret and, of processes racing to
 * make it, exactly one wins and the others use the winner's. */
static int make_secret(const char *path)
{
	uint8_t rnd[32];
	char hex[65], tmp[4200], dir[4200], *slash;
	int fd, rc = -1;

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -1;
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", rnd[i]);
	if (snprintf(tmp, sizeof(tmp), "%s.%ld.%02x%02x.tmp", path,
		     (long)getpid(), rnd[0], rnd[1]) >= (int)sizeof(tmp))
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write(fd, hex, 64) == 64 && fsync(fd) == 0)
		rc = 0;
	close(fd);
	if (rc == 0 && link(tmp, path) && errno != EEXIST)
		rc = -1;
	unlink(tmp);
	if (rc)
		return -1;
	/* the new name is durable once its directory is */
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(dir, ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

/* The secret file holds the raw secret bytes (trailing whitespace ignored).
 * create: make a 32-byte random secret (hex, mode 0600) if missing. */
/* Shorter secrets are warned about: HS256 wants a key of at least its
 * output's 32 bytes (RFC 7518 3.2). */
#define AUTH_SECRET_MIN 32

int auth_load_secret(const char *path, uint8_t *key, size_t cap, size_t *len,
		     bool create)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 && errno == ENOENT && create) {
		if (make_secret(path))
			return -1;
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -1;
	n = read(fd, key, cap);
	/* a secret others can read is no secret: say so (not refused: an
	 * operator may have reasons, e.g. a read-only mount) */
	{
		struct stat st;

		if (fstat(fd, &st) == 0 && (st.st_mode & 077))
			plog(PL_WARN, "auth", "%s can be read by "
				"others (mode %04o): chmod 600 it", path,
				(unsigned)(st.st_mode & 07777));
	}
	close(fd);
	/* the contract: the file's bytes less trailing whitespace */
	while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r' ||
			 key[n - 1] == ' ' || key[n - 1] == '\t' ||
			 key[n - 1] == '\v' || key[n - 1] == '\f'))
		n--;
	if (n <= 0)
		return -1;
	if (n < AUTH_SECRET_MIN)
		plog(PL_WARN, "auth", "%s holds a %zd-byte secret; "
			"use at least %d random bytes (its bytes are the key, "
			"not hex-decoded)", path, n, AUTH_SECRET_MIN);
	*len = (size_t)n;
	return 0;
}
