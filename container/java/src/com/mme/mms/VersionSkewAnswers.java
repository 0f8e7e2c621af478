package com.mme.mms;

import io.netty.handler.codec.http.FullHttpResponse;
import java.nio.charset.StandardCharsets;

/**
 * A load refused for a library version skew (MME_VERSION_SKEW=refuse, a 400 whose reason says so) is told
 * apart from other bad artifacts in the load-failure metric. (The skews of a loaded model go into GET
 * /models/{name}: ModelDescription.)
 */
final class VersionSkewAnswers {

    /** The start of the reason handler/versions.py gives a refused load. */
    private static final String REFUSED = "version skew: ";

    private VersionSkewAnswers() {}

    /** Whether a failed load's answer is a refusal for a version skew. */
    static boolean refused(FullHttpResponse resp) {
        return resp.content().toString(StandardCharsets.UTF_8).contains(REFUSED);
    }
}
