package com.mme.mms;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * What the plugin says of a model's library version skew (handler/versions.py) in MMS's answers: the
 * skews the model's worker recorded in the memory ledger when it loaded go into GET /models/{name}, and
 * a load refused for a skew (MME_VERSION_SKEW=refuse, a 400 whose reason says so) is told apart from
 * other bad artifacts in the load-failure metric.
 */
final class VersionSkewAnswers {

    /** The start of the reason handler/versions.py gives a refused load. */
    private static final String REFUSED = "version skew: ";

    private VersionSkewAnswers() {}

    /**
     * MMS's description of a loaded model with "versionSkew": [{"library", "written", "installed"}]
     * added (empty: the worker found none); unchanged when the ledger has no live record of the model
     * (the vanilla backend before it loaded, or its answer is not the JSON MMS writes).
     */
    static FullHttpResponse describe(FullHttpResponse resp, String name) {
        List<LedgerReader.Skew> skews = MetricsText.LEDGER.skewsOf(name);
        if (skews == null) {
            return resp;
        }
        JsonElement doc;
        try {
            doc = JsonParser.parseString(resp.content().toString(StandardCharsets.UTF_8));
        } catch (RuntimeException e) {
            return resp;
        }
        JsonArray list = new JsonArray();
        for (LedgerReader.Skew s : skews) {
            JsonObject o = new JsonObject();
            o.addProperty("library", s.library);
            o.addProperty("written", s.written);
            o.addProperty("installed", s.installed);
            list.add(o);
        }
        boolean added = false;
        // MMS 1.1.11 answers one JSON object; an array of them (as later MMS versions write) is taken too.
        for (JsonElement e : doc.isJsonArray() ? doc.getAsJsonArray() : List.of(doc)) {
            if (e.isJsonObject()) {
                e.getAsJsonObject().add("versionSkew", list);
                added = true;
            }
        }
        if (!added) {
            return resp;
        }
        byte[] body = (doc.toString() + "\n").getBytes(StandardCharsets.UTF_8);
        FullHttpResponse out = resp.replace(Unpooled.wrappedBuffer(body));
        out.headers().set(HttpHeaderNames.CONTENT_LENGTH, body.length);
        resp.release();
        return out;
    }

    /** Whether a failed load's answer is a refusal for a version skew. */
    static boolean refused(FullHttpResponse resp) {
        return resp.content().toString(StandardCharsets.UTF_8).contains(REFUSED);
    }
}
