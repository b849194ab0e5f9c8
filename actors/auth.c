/*
 * auth: HS256 JWTs. Called by the session for `hello` and by `parleyd
 * token`. libjwt 1.10 checks the signature but accepts any HMAC alg signed
 * with the same secret and validates no claims, so the alg and every claim
 * PROTOCOL.md requires are checked here.
 */
#include <errno.h>
#include <fcntl.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/actors.h"

#define SKEW_S 30
#define TOKEN_MAX 8192

static bool copy_id(jwt_t *jwt, const char *claim, char *dst)
{
	const char *v = jwt_get_grant(jwt, claim);

	if (!v || !proto_id_valid(v, strlen(v)))
		return false;
	strcpy(dst, v);
	return true;
}

int auth_verify(const uint8_t *key, size_t keylen, const char *token,
		size_t toklen, int64_t now_s, struct auth_claims *out,
		const char **why)
{
	char buf[TOKEN_MAX + 1];
	jwt_t *jwt = NULL;
	const char *name;
	int rc = -1;

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
	if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
		*why = "token alg must be HS256";
		goto out;
	}
	memset(out, 0, sizeof(*out));
	if (!copy_id(jwt, "sub", out->sub) || !copy_id(jwt, "ws", out->ws)) {
		*why = "token needs valid sub and ws claims";
		goto out;
	}
	errno = 0;
	out->exp = jwt_get_grant_int(jwt, "exp");
	if (errno || out->exp <= 0) {
		*why = "token needs an exp claim";
		goto out;
	}
	if (now_s > out->exp + SKEW_S) {
		*why = "token expired";
		goto out;
	}
	errno = 0;
	out->nbf = jwt_get_grant_int(jwt, "nbf");
	if (errno == 0 && now_s + SKEW_S < out->nbf) {
		*why = "token not yet valid";
		goto out;
	}
	name = jwt_get_grant(jwt, "name");
	if (name)
		snprintf(out->name, sizeof(out->name), "%s", name);
	rc = 0;
out:
	jwt_free(jwt);
	return rc;
}

char *auth_mint(const uint8_t *key, size_t keylen, const char *sub,
		const char *ws, int64_t exp, const char *name)
{
	jwt_t *jwt = NULL;
	char *tok = NULL;

	if (jwt_new(&jwt))
		return NULL;
	if (jwt_add_grant(jwt, "sub", sub) || jwt_add_grant(jwt, "ws", ws) ||
	    jwt_add_grant_int(jwt, "exp", exp) ||
	    (name && jwt_add_grant(jwt, "name", name)) ||
	    jwt_set_alg(jwt, JWT_ALG_HS256, key, (int)keylen))
		goto out;
	tok = jwt_encode_str(jwt);
out:
	jwt_free(jwt);
	return tok;
}

/* The secret file holds the raw secret bytes (trailing newline ignored).
 * create: make a 32-byte random secret (hex, mode 0600) if missing. */
int auth_load_secret(const char *path, uint8_t *key, size_t cap, size_t *len,
		     bool create)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 && errno == ENOENT && create) {
		uint8_t rnd[32];
		char hex[65];

		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -1;
		for (int i = 0; i < 32; i++)
			sprintf(hex + 2 * i, "%02x", rnd[i]);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return -1;
		if (write(fd, hex, 64) != 64 || fsync(fd)) {
			close(fd);
			return -1;
		}
		close(fd);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -1;
	n = read(fd, key, cap);
	close(fd);
	while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r'))
		n--;
	if (n <= 0)
		return -1;
	*len = (size_t)n;
	return 0;
}
