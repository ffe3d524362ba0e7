/* libFuzzer target: HTTP request bodies -> requests (common/serve/request.c), as chat, completion and encode. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "serve/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_gen_params d = {.max_tokens = 256};  /* lmd_gen_params_default's, without linking the runner */
	struct lmd_api_request q;
	struct lmd_api_encode en;
	struct lmd_api_error e;
	lmd_sampling_default(&d.sampling);
	for (int kind = LMD_API_CHAT; kind <= LMD_API_COMPLETION; kind++) {
		if (!lmd_api_decode(&q, (enum lmd_api_kind)kind, (const char *)data, size, &d, &e)) {
			/* what a decoded request promises */
			if (q.n < 1 || q.n > LMD_API_MAX_CHOICES || q.p.n_stop > LMD_MAX_STOP_STRINGS ||
			    q.top_logprobs < 0 || q.top_logprobs > LMD_MAX_TOP_LOGPROBS)
				abort();
			for (int i = 0; i < q.nmsg; i++)
				if (!q.msgs[i].role || !q.msgs[i].content)
					abort();
		} else {
			free(lmd_api_error_json(&e));
		}
		lmd_api_request_free(&q);
	}
	if (!lmd_api_decode_encode(&en, (const char *)data, size, &e))
		for (int i = 0; i < en.n; i++)
			if (!en.input[i])
				abort();
	lmd_api_encode_free(&en);
	return 0;
}
