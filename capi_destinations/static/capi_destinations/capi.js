/*
 * capi.js: record a conversion once, in the Meta Pixel and through the Conversions API, with one
 * shared event_id so Meta counts it once. No dependencies.
 *
 *   <script src="https://…/static/capi_destinations/capi.js"
 *           data-capi-endpoint="https://…/capi/v1/destinations/pk_…/events"></script>
 *
 *   capi.track("Purchase", {value: 49.9, currency: "EUR"}, {email: "jane@example.com"});
 *   // → the event_id, also given to fbq() as eventID
 *
 * The endpoint accepts the public key only from the destination's allowed origins. The server
 * hashes the customer information; the browser sends it as it is, over HTTPS.
 */
(function (window, document) {
  "use strict";

  // Meta's standard events go to fbq("track"); anything else is a custom event ("trackCustom").
  var STANDARD_EVENTS = [
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "CompleteRegistration", "Contact",
    "CustomizeProduct", "Donate", "FindLocation", "InitiateCheckout", "Lead", "PageView",
    "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe",
    "ViewContent"
  ];

  var script = document.currentScript;
  var endpoint = (script && script.getAttribute("data-capi-endpoint")) ||
    (window.capiConfig && window.capiConfig.endpoint) || "";
  var consentState = null;

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var part = parts[i].replace(/^\s+/, "");
      var equals = part.indexOf("=");
      if (equals > 0 && part.slice(0, equals) === name) {
        try {
          return decodeURIComponent(part.slice(equals + 1));
        } catch (error) {
          return part.slice(equals + 1);
        }
      }
    }
    return null;
  }

  function newEventId() {
    var crypto = window.crypto;
    if (crypto && typeof crypto.randomUUID === "function") {
      return crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    if (crypto && crypto.getRandomValues) {
      crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) {
        bytes[i] = Math.floor(Math.random() * 256);
      }
    }
    var hex = "";
    for (var j = 0; j < bytes.length; j++) {
      hex += (bytes[j] < 16 ? "0" : "") + bytes[j].toString(16);
    }
    return hex;
  }

  function copy(source) {
    var result = {};
    if (source && typeof source === "object") {
      for (var key in source) {
        if (Object.prototype.hasOwnProperty.call(source, key)) {
          result[key] = source[key];
        }
      }
    }
    return result;
  }

  function send(event) {
    var body = JSON.stringify(event);
    // text/plain keeps the request "simple" (no CORS preflight) and is what sendBeacon may send
    // cross-origin; the endpoint reads the body as JSON whatever its declared type.
    var type = "text/plain;charset=UTF-8";
    if (navigator.sendBeacon) {
      try {
        if (navigator.sendBeacon(endpoint, new Blob([body], {type: type}))) {
          return;
        }
      } catch (error) {
        // Fall through to fetch.
      }
    }
    if (window.fetch) {
      window.fetch(endpoint, {
        method: "POST",
        body: body,
        keepalive: true,
        credentials: "include",
        headers: {"Content-Type": type}
      }).catch(function () {});
    }
  }

  /**
   * Record one event: fires the Pixel (when fbq is on the page) and posts the same event, with the
   * same event_id, to the Conversions API endpoint. Returns the event_id.
   * options.eventId reuses an id you already have (an order number, say).
   */
  function track(eventName, customData, userData, options) {
    options = options || {};
    var eventId = options.eventId ? String(options.eventId) : newEventId();
    var custom = copy(customData);
    if (typeof window.fbq === "function") {
      var method = STANDARD_EVENTS.indexOf(eventName) >= 0 ? "track" : "trackCustom";
      window.fbq(method, eventName, custom, {eventID: eventId});
    }
    var user = copy(userData);
    var fbp = readCookie("_fbp");
    var fbc = readCookie("_fbc");
    if (fbp && !user.fbp) {
      user.fbp = fbp;
    }
    if (fbc && !user.fbc) {
      user.fbc = fbc;
    }
    var event = {
      event_name: eventName,
      event_time: Math.floor(Date.now() / 1000),
      event_id: eventId,
      action_source: "website",
      event_source_url: window.location.href,
      user_data: user,
      custom_data: custom
    };
    if (document.referrer) {
      event.referrer_url = document.referrer;
    }
    if (consentState) {
      event.consent = copy(consentState);
    }
    if (endpoint) {
      send(event);
    }
    return eventId;
  }

  /**
   * Attach the visitor's consent to every later event, e.g.
   * {ad_storage: "granted", ad_user_data: "denied", ad_personalization: "denied", region: "DE"}.
   * null forgets it (the destination's default for a missing state applies).
   */
  function setConsent(state) {
    consentState = state ? copy(state) : null;
  }

  window.capi = {
    track: track,
    setConsent: setConsent,
    endpoint: endpoint
  };
})(window, document);
