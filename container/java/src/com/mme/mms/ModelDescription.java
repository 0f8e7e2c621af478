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
 * What the plugin adds to MMS's answer to GET /models/{name} from the memory ledger (LedgerReader): the
 * library version skews the model's process recorded when it loaded it (handler/versions.py), and whether
 * a shared host holds it or a process of its own (MME_BACKEND=hosts: a big, slow or crashing model moves
 * out of the hosts, which an operator sizing the container wants to see per model).
 */
final class ModelDescription {

    private ModelDescription() {}

    /**
     * MMS's description of a loaded model with "versionSkew": [{"library", "written", "installed"}] (empty:
     * none found) and "sharedHost": true|false added; unchanged when the ledger has no live record of the
     * model (the vanilla backend before it loaded, a model a host evicted from its cache, which reloads on
     * its next request) or MMS's answer is not the JSON it writes.
     */
    static FullHttpResponse describe(FullHttpResponse resp, String name) {
        LedgerReader.Entry entry = MetricsText.LEDGER.entryOf(name);
        if (entry == null) {
            return resp;
        }
        JsonElement doc;
        try {
            doc = JsonParser.parseString(resp.content().toString(StandardCharsets.UTF_8));
        } catch (RuntimeException e) {
            return resp;
        }
        JsonArray list = new JsonArray();
        for (LedgerReader.Skew s : entry.skews) {
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
                e.getAsJsonObject().addProperty("sharedHost", entry.sharedHost);
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
}
