/*
 * gen-load: a small load generator for lmd-run serve (or any OpenAI-compatible server), until
 * lmd-bench serve exists. Plain sockets and threads, so it runs where Node does not.
 *
 *   gen-load URL MODEL [-c LIST] [-p PROMPT_TOKENS] [-n COMPLETION_TOKENS] [-r ROUNDS] [-w SECONDS] [-k KEY] [-V VOCAB]
 *
 * For each concurrency C of LIST (default 1): C clients start together, each sends ROUNDS (default 1)
 * streamed POST /v1/completions requests one after the other, with a prompt of PROMPT_TOKENS random token
 * ids below VOCAB (default 32000) (default 128) and max_tokens COMPLETION_TOKENS (default 128), ignore_eos, greedy, usage included.
 * One warm-up request runs first. -w waits up to SECONDS for GET /health to answer 200 first.
 * Prints CSV on stdout: concurrency,requests,prompt_tokens,completion_tokens,seconds,output_tokens_per_s,
 * ttft_p50_ms,ttft_p99_ms,errors (output tokens/s: every completion token over the wall time from the
 * first request sent to the last answer read; TTFT: from sending to the first event of the stream).
 * Exit 1 when a request failed.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *port, *model, *key;
static int prompt_tokens = 128, completion_tokens = 128, rounds = 1, vocab = 32000;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int dial(void)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(host, port, &hints, &ai))
		return -1;
	int fd = socket(ai->ai_family, ai->ai_socktype, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

struct result {
	double ttft, end;
	int tokens, status;
};

/* One HTTP/1.0 request (the server closes the connection at the end: no chunked decoding needed). */
static void request(const char *method, const char *path, const char *body, unsigned seed, struct result *res)
{
	char head[512], buf[65536];
	int fd = dial();
	res->status = -1;
	if (fd < 0)
		return;
	size_t blen = body ? strlen(body) : 0;
	int hn = snprintf(head, sizeof(head), "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\n"
			  "Content-Length: %zu\r\n%s%s%s\r\n", method, path, host, blen, key ? "Authorization: Bearer " : "",
			  key ? key : "", key ? "\r\n" : "");
	double t0 = now();
	if (send_all(fd, head, (size_t)hn) || (body && send_all(fd, body, blen))) {
		close(fd);
		return;
	}
	/* read it all, noting when the first event came; keep a tail to find the usage in */
	size_t have = 0;
	char tail[8192];
	size_t ntail = 0;
	int first = 1;
	ssize_t k;
	while ((k = recv(fd, buf, sizeof(buf), 0)) > 0) {
		if (first && memmem(buf, (size_t)k, "data: {", 7)) {
			res->ttft = now() - t0;
			first = 0;
		}
		if (!have) {
			int a, b;
			if (sscanf(buf, "HTTP/%d.%d %d", &a, &b, &res->status) != 3)
				res->status = -1;
		}
		have += (size_t)k;
		if ((size_t)k >= sizeof(tail)) {
			memcpy(tail, buf + k - sizeof(tail), sizeof(tail));
			ntail = sizeof(tail);
		} else {
			size_t keep = ntail + (size_t)k > sizeof(tail) ? sizeof(tail) - (size_t)k : ntail;
			memmove(tail, tail + ntail - keep, keep);
			memcpy(tail + keep, buf, (size_t)k);
			ntail = keep + (size_t)k;
		}
	}
	close(fd);
	res->end = now() - t0;
	char *u = memmem(tail, ntail, "\"completion_tokens\":", 20);
	res->tokens = u ? atoi(u + 20) : 0;
	(void)seed;
}

static void completion(unsigned seed, struct result *res)
{
	size_t cap = 256 + (size_t)prompt_tokens * 8;
	char *body = malloc(cap);
	if (!body) {
		res->status = -1;
		return;
	}
	size_t n = (size_t)snprintf(body, cap, "{\"model\":\"%s\",\"prompt\":[", model);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (int i = 0; i < prompt_tokens; i++) {  /* ids 3 .. vocab - 1: past a Llama vocabulary's special tokens */
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		n += (size_t)snprintf(body + n, cap - n, "%s%u", i ? "," : "", (unsigned)(3 + x % (uint64_t)(vocab - 3)));
	}
	snprintf(body + n, cap - n, "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
		 "\"stream_options\":{\"include_usage\":true}}", completion_tokens);
	request("POST", "/v1/completions", body, seed, res);
	free(body);
}

struct client {
	pthread_t t;
	int id;
	struct result *res;          /* [rounds] */
	pthread_barrier_t *go;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	pthread_barrier_wait(c->go);
	for (int r = 0; r < rounds; r++)
		completion((unsigned)(c->id * 1000 + r + 1), &c->res[r]);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	if (!n)
		return 0;
	int i = (int)(p / 100.0 * (n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static int run(int conc)
{
	struct client *cl = calloc(conc, sizeof(*cl));
	struct result *res = calloc((size_t)conc * rounds, sizeof(*res));
	double *ttft = calloc((size_t)conc * rounds, sizeof(*ttft));
	pthread_barrier_t go;
	if (!cl || !res || !ttft || pthread_barrier_init(&go, NULL, (unsigned)conc + 1))
		return -1;
	for (int i = 0; i < conc; i++) {
		cl[i] = (struct client){.id = i, .res = res + (size_t)i * rounds, .go = &go};
		if (pthread_create(&cl[i].t, NULL, client_main, &cl[i])) {
			fprintf(stderr, "gen-load: cannot start client %d\n", i);
			exit(1);
		}
	}
	double t0 = now();
	pthread_barrier_wait(&go);
	for (int i = 0; i < conc; i++)
		pthread_join(cl[i].t, NULL);
	double wall = now() - t0;
	long tokens = 0;
	int errors = 0, n = 0;
	for (int i = 0; i < conc * rounds; i++) {
		if (res[i].status != 200 || res[i].tokens != completion_tokens) {
			errors++;
			continue;
		}
		tokens += res[i].tokens;
		ttft[n++] = res[i].ttft * 1e3;
	}
	qsort(ttft, n, sizeof(*ttft), cmp);
	printf("%d,%d,%d,%d,%.3f,%.1f,%.1f,%.1f,%d\n", conc, conc * rounds, prompt_tokens, completion_tokens, wall,
	       tokens / wall, pct(ttft, n, 50), pct(ttft, n, 99), errors);
	fflush(stdout);
	pthread_barrier_destroy(&go);
	free(cl);
	free(res);
	free(ttft);
	return errors;
}

static void usage(void)
{
	fprintf(stderr, "usage: gen-load URL MODEL [-c LIST] [-p PROMPT_TOKENS] [-n COMPLETION_TOKENS] [-r ROUNDS] "
			"[-w SECONDS] [-k KEY] [-V VOCAB]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *list = "1";
	int wait = 0, o;
	while ((o = getopt(argc, argv, "c:p:n:r:w:k:V:")) != -1) {
		switch (o) {
		case 'c': list = optarg; break;
		case 'p': prompt_tokens = atoi(optarg); break;
		case 'n': completion_tokens = atoi(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'w': wait = atoi(optarg); break;
		case 'k': key = optarg; break;
		case 'V': vocab = atoi(optarg); break;
		default: usage();
		}
	}
	if (argc - optind != 2 || prompt_tokens < 1 || completion_tokens < 1 || rounds < 1 || vocab < 4)
		usage();
	/* http://HOST:PORT */
	static char hp[256];
	const char *url = argv[optind];
	model = argv[optind + 1];
	if (strncmp(url, "http://", 7) || snprintf(hp, sizeof(hp), "%s", url + 7) >= (int)sizeof(hp))
		usage();
	hp[strcspn(hp, "/")] = 0;
	char *colon = strrchr(hp, ':');
	if (!colon)
		usage();
	*colon = 0;
	host = hp[0] == '[' ? (hp[strlen(hp) - 1] = 0, hp + 1) : hp;
	port = colon + 1;
	struct result r = {0};
	for (int i = 0; i < wait * 10; i++) {
		request("GET", "/health", NULL, 0, &r);
		if (r.status == 200)
			break;
		usleep(100000);
	}
	completion(0, &r);  /* warm-up */
	if (r.status != 200) {
		fprintf(stderr, "gen-load: the warm-up request failed (HTTP %d)\n", r.status);
		return 1;
	}
	printf("concurrency,requests,prompt_tokens,completion_tokens,seconds,output_tokens_per_s,ttft_p50_ms,"
	       "ttft_p99_ms,errors\n");
	int bad = 0;
	for (const char *p = list; *p;) {
		int c = atoi(p);
		if (c < 1)
			usage();
		bad |= run(c) != 0;
		p += strcspn(p, ",");
		p += *p == ',';
	}
	return bad;
}
