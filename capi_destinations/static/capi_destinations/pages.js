/*
 * pages.js: the small comforts of the app's pages. No dependencies; loaded from the site itself,
 * so it runs under the pages' Content-Security-Policy (no inline script, no inline style: it
 * only sets attributes and text).
 *
 * - the token field: a show/hide toggle, and a hint that offers to remove a pasted "Bearer ";
 *   the "paste the token again" note hides while the (htmx-preserved) input still holds a token;
 * - times: <time data-capi-time> is rewritten in the viewer's time zone (its title stays UTC);
 * - copy buttons: <button data-capi-copy="id"> copies the exact text of the element with that id;
 * - Escape closes the open menu or disclosure (<details>) and gives focus back to its summary.
 *
 * Everything server-rendered still reads correctly without it (UTC times, no buttons).
 */
(function (window, document) {
  "use strict";

  var BEARER = /^\s*bearer\s+/i;
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
    "Dec"];

  function byId(id) {
    return id ? document.getElementById(id) : null;
  }

  function each(root, selector, callback) {
    var found = root.querySelectorAll ? root.querySelectorAll(selector) : [];
    for (var i = 0; i < found.length; i++) {
      callback(found[i]);
    }
    if (root.matches && root.matches(selector)) {
      callback(root);
    }
  }

  // --- the token field ---------------------------------------------------------------------

  function syncTokenField(input) {
    each(document, "[data-capi-bearer-hint='" + input.id + "']", function (hint) {
      hint.hidden = !BEARER.test(input.value);
    });
    each(document, "[data-capi-repaste='" + input.id + "']", function (note) {
      note.hidden = input.value !== "";
    });
    each(document, "[data-capi-reveal='" + input.id + "']", function (toggle) {
      toggle.hidden = false;
      toggle.setAttribute("aria-pressed", input.type === "text" ? "true" : "false");
    });
  }

  function toggleReveal(toggle) {
    var input = byId(toggle.getAttribute("data-capi-reveal"));
    if (!input) {
      return;
    }
    input.type = input.type === "password" ? "text" : "password";
    syncTokenField(input);
  }

  function removeBearer(button) {
    var input = byId(button.getAttribute("data-capi-remove-bearer"));
    if (!input) {
      return;
    }
    input.value = input.value.replace(BEARER, "");
    // The token check listens for input, as if the user had typed.
    input.dispatchEvent(new Event("input", {bubbles: true}));
    input.focus();
  }

  // --- times in the viewer's time zone -----------------------------------------------------

  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }

  function localParts(date) {
    var format = new Intl.DateTimeFormat("en-US", {
      year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric",
      second: "numeric", hourCycle: "h23", timeZoneName: "short"
    });
    var parts = {};
    format.formatToParts(date).forEach(function (part) {
      parts[part.type] = part.value;
    });
    return {
      year: parts.year,
      month: Number(parts.month),
      day: Number(parts.day),
      hour: pad(Number(parts.hour) % 24),
      minute: pad(Number(parts.minute)),
      second: pad(Number(parts.second)),
      zone: parts.timeZoneName
    };
  }

  // The styles of capi_tags.TIME_STYLES, written in the viewer's zone.
  var STYLES = {
    full: function (p) {
      return p.year + "-" + pad(p.month) + "-" + pad(p.day) + " " + p.hour + ":" + p.minute +
        ":" + p.second;
    },
    minute: function (p) {
      return p.year + "-" + pad(p.month) + "-" + pad(p.day) + " " + p.hour + ":" + p.minute;
    },
    short: function (p) {
      return MONTHS[p.month - 1] + " " + p.day + ", " + p.hour + ":" + p.minute + ":" + p.second;
    },
    time: function (p) {
      return p.hour + ":" + p.minute;
    },
    seconds: function (p) {
      return p.hour + ":" + p.minute + ":" + p.second;
    }
  };

  function localizeTime(element) {
    var style = STYLES[element.getAttribute("data-capi-time")];
    var date = new Date(element.getAttribute("datetime"));
    if (!style || isNaN(date.getTime()) || !window.Intl) {
      return;
    }
    var parts = localParts(date);
    element.textContent = style(parts) + " " + parts.zone;
    element.setAttribute("data-capi-local", "true");
  }

  // --- copy buttons ------------------------------------------------------------------------

  function copied(button) {
    button.textContent = "Copied";
    button.setAttribute("data-copied", "true");
    // Said to screen readers too: a button's new name alone is not announced.
    var status = button.parentNode.querySelector("[role=status]");
    if (!status) {
      status = document.createElement("span");
      status.setAttribute("role", "status");
      status.className = "capi-offscreen";
      button.parentNode.appendChild(status);
    }
    status.textContent = "Copied";
  }

  function copyWithSelection(text, button) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "capi-offscreen";
    document.body.appendChild(area);
    area.select();
    try {
      if (document.execCommand("copy")) {
        copied(button);
      }
    } finally {
      document.body.removeChild(area);
    }
  }

  function copyText(button) {
    var source = byId(button.getAttribute("data-capi-copy"));
    if (!source) {
      return;
    }
    var text = source.textContent;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () {
        copied(button);
      }, function () {
        copyWithSelection(text, button);
      });
    } else {
      copyWithSelection(text, button);
    }
  }

  // --- Escape closes menus and disclosures --------------------------------------------------

  function closeDetails(details) {
    details.open = false;
    var summary = details.querySelector("summary");
    if (summary) {
      summary.focus();
    }
  }

  // A menu closes whatever inside it has focus; a disclosure (the form's "Advanced") only from
  // its own summary, so Escape in one of its fields never hides the field being typed in.
  function onEscape() {
    var active = document.activeElement;
    var inside = active && active.closest ? active.closest("details[open]") : null;
    if (inside && (inside.classList.contains("capi-menu") ||
        active === inside.querySelector("summary"))) {
      closeDetails(inside);
      return;
    }
    each(document, "details.capi-menu[open]", closeDetails);
  }

  // --- wiring ------------------------------------------------------------------------------

  function setUp(root) {
    each(root, "input[data-testid='token-input']", syncTokenField);
    each(root, "[data-capi-reveal]", function (toggle) {
      var input = byId(toggle.getAttribute("data-capi-reveal"));
      if (input) {
        syncTokenField(input);
      }
    });
    each(root, "time[data-capi-time]", localizeTime);
    each(root, "[data-capi-copy]", function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target || !target.closest) {
      return;
    }
    var toggle = target.closest("[data-capi-reveal]");
    if (toggle) {
      toggleReveal(toggle);
      return;
    }
    var bearer = target.closest("[data-capi-remove-bearer]");
    if (bearer) {
      removeBearer(bearer);
      return;
    }
    var copy = target.closest("[data-capi-copy]");
    if (copy) {
      copyText(copy);
    }
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target && target.matches && target.matches("input[data-testid='token-input']")) {
      syncTokenField(target);
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      onEscape();
    }
  });

  // htmx announces every piece of content it adds (and the page itself) with htmx:load.
  document.addEventListener("htmx:load", function (event) {
    setUp(event.detail && event.detail.elt ? event.detail.elt : document);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      setUp(document);
    });
  } else {
    setUp(document);
  }
}(window, document));
