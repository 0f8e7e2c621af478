package com.mme.mms;

import java.nio.charset.StandardCharsets;

/** Model names MMS would register but could not start or address afterwards. */
final class ModelNames {

    /**
     * SageMaker's own limit on a target model's name. Percent-encoded (3 characters a byte), such a
     * name still fits Netty's 4,096-character request line ("DELETE /models/NAME HTTP/1.1"); MMS
     * registered longer ones that every later invoke or DELETE answered 400 without reaching.
     */
    static final int MAX_NAME_BYTES = 1024;

    private ModelNames() {}

    /** Why a model of this name could not be started or addressed afterwards, or null. */
    static String unaddressable(String name) {
        if (name.isEmpty()) {
            return "Model name must not be empty";
        }
        if (name.startsWith("-")) {
            // MMS passes the name as the backend's --model-name argument, which then reads as an option.
            return "Model name must not start with '-'";
        }
        int bytes = name.getBytes(StandardCharsets.UTF_8).length;
        if (bytes > MAX_NAME_BYTES) {
            return "Model name is " + bytes + " bytes long; at most " + MAX_NAME_BYTES + " can be addressed";
        }
        return null;
    }
}
